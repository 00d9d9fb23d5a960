import ArgumentParser
import Foundation
import KeywardAudit
import KeywardGateway
import KeywardPostgres
import KeywardStorage

/// `keyward audit …`: check the chain offline, or read it from a running gateway (auditor token).
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Verify and read the tamper-evident audit log.",
        subcommands: [Verify.self, Tail.self, Export.self])

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-walk the audit chain and its signed checkpoints; exit 1 naming the first bad position.")
        @Option(help: "The gateway's data folder.") var data: String = "keyward-data"
        @Option(help: "A PostgreSQL address (KEYWARD_DATABASE_URL) instead of the data folder's SQLite database.")
        var database: String?
        @Option(help: "The trusted audit public key file (default: DATA/audit-signing.pub, or with --database the key stored in the database). Keep a copy elsewhere: whoever can rewrite the folder or the database can rewrite that copy too.")
        var publicKey: String?

        func run() async throws {
            if let url = database ?? ProcessInfo.processInfo.environment["KEYWARD_DATABASE_URL"].flatMap({ $0.isEmpty ? nil : $0 }) {
                let postgres: PostgresRecordStore
                do { postgres = try PostgresRecordStore(url: try PostgresURL(url)) } catch let e as StorageError {
                    throw CLIError(exitCode: 2, description: e.reason)
                }
                try await postgres.whileRunning {
                    let key: [UInt8]
                    if let publicKey { key = try AuditSigner.readPublicKey(publicKey) } else {
                        guard let stored = try await postgres.setting(AuditSigner.publicSetting), stored.count == 32 else {
                            throw CLIError(exitCode: 2, description: "the database holds no audit public key: give --public-key")
                        }
                        key = stored
                        FileHandle.standardError.write(Data("note: trusting the audit public key stored in the database itself; pass --public-key with a copy kept elsewhere to detect a rewrite of the whole database\n".utf8))
                    }
                    try await verify(postgres, key: key)
                }
            } else {
                let database = data + "/keyward.sqlite3"
                guard FileManager.default.fileExists(atPath: database) else {
                    throw CLIError(exitCode: 2, description: "no database at \(database)")
                }
                let key = try AuditSigner.readPublicKey(publicKey ?? AuditSigner.publicKeyPath(folder: data))
                try await verify(try SQLiteRecordStore(path: database), key: key)
            }
        }

        private func verify(_ store: any RecordStore, key: [UInt8]) async throws {
            let (count, signed): (Int64, Int64)
            do { (count, signed) = try await AuditVerifier.verify(store, trustedKeys: [key]) } catch let e as AuditVerifier.Failure {
                throw CLIError(exitCode: 1, description: e.description)
            } catch let e as StorageError {
                throw CLIError(exitCode: 2, description: "cannot read the audit log: \(e)")
            }
            print("audit log intact: \(count) events, signed through event \(signed)")
            if count > signed {
                print("note: the last \(count - signed) events are not yet covered by a signed checkpoint (the gateway signs every N events, each minute and at shutdown)")
            }
        }
    }

    struct Tail: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the latest audit events as JSON lines (auditor token).")
        @Option(help: "How many of the latest events to start with.") var lines: Int = 20
        @Flag(help: "Keep printing new events.") var follow = false
        @OptionGroup var admin: AdminOptions

        func run() async throws {
            // The last `lines` events up to the head as it is now, read from near the head rather
            // than by paging through the whole log; then, with --follow, whatever comes after.
            let first = try await admin.call(.GET, "/admin/v1/audit?limit=1") as? [String: Any]
            let head = (first?["head_seq"] as? NSNumber)?.int64Value ?? 0
            var after = max(0, head - Int64(max(lines, 0)))
            while after < head {
                let page = try await AuditCommand.page(admin, after: after, extra: "")
                guard !page.events.isEmpty else { break }
                for e in page.events where ((e["seq"] as? NSNumber)?.int64Value ?? 0) <= head { try printLine(e) }
                after = page.last
            }
            after = head
            while follow {
                try await Task.sleep(for: .seconds(1))
                let page = try await AuditCommand.page(admin, after: after, extra: "")
                for e in page.events { try printLine(e) }
                after = page.last
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write the audit log as JSON lines (auditor token).")
        @Option(help: "Output format: jsonl.") var format: String = "jsonl"
        @Option(help: "Only events at or after this Unix time (seconds).") var since: Double?
        @Option(help: "Only events of this tenant.") var tenant: String?
        @OptionGroup var admin: AdminOptions

        func validate() throws {
            guard format == "jsonl" else { throw ValidationError("--format: only jsonl is supported") }
        }

        func run() async throws {
            var extra = ""
            if let since { extra += "&since=\(since)" }
            if let tenant { extra += "&tenant=\(pathSegment(tenant))" }
            var after: Int64 = 0
            while true {
                let page = try await AuditCommand.page(admin, after: after, extra: extra)
                for e in page.events { try printLine(e) }
                if page.events.count < 1000 { return }
                after = page.last
            }
        }
    }

    static func page(_ admin: AdminOptions, after: Int64, extra: String) async throws -> (events: [[String: Any]], last: Int64) {
        let answer = try await admin.call(.GET, "/admin/v1/audit?limit=1000&after=\(after)" + extra) as? [String: Any] ?? [:]
        let events = answer["data"] as? [[String: Any]] ?? []
        return (events, (answer["last_seq"] as? NSNumber)?.int64Value ?? after)
    }
}

private func printLine(_ object: [String: Any]) throws {
    print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
}
