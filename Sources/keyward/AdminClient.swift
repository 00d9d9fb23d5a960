import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// Where the gateway's admin API is, for the commands that talk to a running gateway.
struct AdminOptions: ParsableArguments {
    @Option(help: "A running gateway's URL. tenants/tokens/jobs/audit default to KEYWARD_URL or http://127.0.0.1:8080; keys commands go through the gateway only when it is given, else to the store directly.")
    var url: String?

    @Option(help: "The token for the admin API, of the role the command needs (better: KEYWARD_ADMIN_TOKEN, which stays out of the process list).")
    var adminToken: String?

    /// Calls the admin API; returns the decoded JSON answer, or throws the gateway's error message.
    func call(_ method: HTTPMethod, _ path: String, _ body: [String: Any]? = nil) async throws -> Any? {
        let env = ProcessInfo.processInfo.environment
        let base = (url ?? env["KEYWARD_URL"] ?? "http://127.0.0.1:8080").trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        guard let token = adminToken ?? env["KEYWARD_ADMIN_TOKEN"], !token.isEmpty else {
            throw CLIError(exitCode: 2, description: "an admin token is needed: KEYWARD_ADMIN_TOKEN or --admin-token")
        }
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        request.headers.add(name: "authorization", value: "Bearer \(token)")
        if let body {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        }
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        } catch {
            throw CLIError(exitCode: 1, description: "cannot reach the gateway at \(base)")
        }
        let bytes = try await response.body.collect(upTo: 16 << 20)
        let object = bytes.readableBytes == 0 ? nil : try? JSONSerialization.jsonObject(with: Data(buffer: bytes))
        guard (200..<300).contains(response.status.code) else {
            let error = (object as? [String: Any])?["error"] as? [String: Any]
            let message = (error?["message"] as? String) ?? "the gateway answered \(response.status.code)"
            throw CLIError(exitCode: 1, description: "\(message) (\((error?["code"] as? String) ?? "http_\(response.status.code)"))")
        }
        return object
    }
}

/// Percent-encodes a path segment (a key reference holds ':' and '/').
func pathSegment(_ s: String) -> String {
    s.addingPercentEncoding(withAllowedCharacters: CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? s
}

/// Prints a JSON answer as sorted, indented JSON.
func printJSON(_ object: Any?) throws {
    guard let object else { return }
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

/// `keyward tenants …` against a running gateway.
struct TenantsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenants", abstract: "Create, list and re-key tenants of a running gateway.", subcommands: [Create.self, List.self, Update.self, Rekey.self])

    /// The settings `create` and `update` share; those not given are left out of the body.
    struct Settings: ParsableArguments {
        @Option(help: "always, on-request or never.") var store: String?
        @Option(help: "Days to keep stored records (0 keeps them).") var retentionDays: Int?
        @Option(help: "allowed, or required: plaintext AI requests are then refused.") var encryptedRequests: String?

        var body: [String: Any] {
            var body: [String: Any] = [:]
            if let store { body["store"] = store }
            if let retentionDays { body["retention_days"] = retentionDays }
            if let encryptedRequests { body["encrypted_requests"] = encryptedRequests }
            return body
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a tenant; without --key, a new local:NAME key is made for it.")
        @Argument(help: "The tenant's name.") var name: String
        @Option(help: "Its master key: local:NAME, aws-kms:ARN or pkcs11:….") var key: String?
        @OptionGroup var settings: Settings
        @OptionGroup var admin: AdminOptions
        func run() async throws {
            var body = settings.body
            body["name"] = name
            if let key { body["key"] = key }
            try printJSON(try await admin.call(.POST, "/admin/v1/tenants", body))
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a tenant's settings; those not given stay.")
        @Argument(help: "The tenant's name.") var name: String
        @OptionGroup var settings: Settings
        @OptionGroup var admin: AdminOptions
        func run() async throws {
            guard !settings.body.isEmpty else {
                throw CLIError(exitCode: 2, description: "nothing to change: give --store, --retention-days or --encrypted-requests")
            }
            try printJSON(try await admin.call(.PATCH, "/admin/v1/tenants/\(pathSegment(name))", settings.body))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants.")
        @OptionGroup var admin: AdminOptions
        func run() async throws { try printJSON(try await admin.call(.GET, "/admin/v1/tenants")) }
    }

    struct Rekey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a tenant to another master key (key-admin token); its records' data keys are re-wrapped by a background job.")
        @Argument(help: "The tenant's name.") var name: String
        @Option(help: "The new master key: local:NAME, aws-kms:ARN or pkcs11:….") var key: String
        @Flag(help: "Wait for the job to end, printing its progress.") var wait = false
        @OptionGroup var admin: AdminOptions
        func run() async throws {
            let answer = try await admin.call(.POST, "/admin/v1/tenants/\(pathSegment(name))/rekey", ["key": key])
            guard wait, let id = (answer as? [String: Any])?["job"] as? String else { return try printJSON(answer) }
            try await JobsCommand.follow(id, admin: admin)
        }
    }
}

/// `keyward jobs show ID`.
struct JobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "jobs", abstract: "Follow background jobs (key-admin token).",
                                                    subcommands: [Show.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A job's status, counts and rate.")
        @Argument var id: String
        @Flag(help: "Poll until the job ends.") var wait = false
        @OptionGroup var admin: AdminOptions
        func run() async throws {
            if wait { try await JobsCommand.follow(id, admin: admin) } else {
                try printJSON(try await admin.call(.GET, "/admin/v1/jobs/\(pathSegment(id))"))
            }
        }
    }

    /// Prints the job each second until it is no longer running; fails if it failed.
    static func follow(_ id: String, admin: AdminOptions) async throws {
        while true {
            let job = try await admin.call(.GET, "/admin/v1/jobs/\(pathSegment(id))") as? [String: Any] ?? [:]
            let status = job["status"] as? String ?? "unknown"
            guard status == "running" else {
                try printJSON(job)
                if status != "done" { throw CLIError(exitCode: 1, description: "job \(id) \(status)") }
                return
            }
            var stderr = StandardError()
            print("\(id): \(job["records_processed"] ?? 0)/\(job["records_total"] ?? 0) records", to: &stderr)
            try await Task.sleep(for: .seconds(1))
        }
    }
}

/// `keyward tokens …` against a running gateway.
struct TokensCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokens", abstract: "Issue, suspend and revoke bearer tokens of a running gateway.",
        subcommands: [Create.self, Delete.self, Suspend.self, Resume.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a token; it is shown once.")
        @Option(help: "The tenant an app token acts for.") var tenant: String?
        @Option(help: "app, admin, key-admin or auditor.") var role: String = "app"
        @OptionGroup var admin: AdminOptions
        func run() async throws {
            var body: [String: Any] = ["role": role]
            if let tenant { body["tenant"] = tenant }
            try printJSON(try await admin.call(.POST, "/admin/v1/tokens", body))
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token by its id (tok_…).")
        @Argument var id: String
        @OptionGroup var admin: AdminOptions
        func run() async throws { try printJSON(try await admin.call(.DELETE, "/admin/v1/tokens/\(pathSegment(id))")) }
    }

    struct Suspend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Suspend a token: it authenticates nothing until resumed.")
        @Argument var id: String
        @OptionGroup var admin: AdminOptions
        func run() async throws { try printJSON(try await admin.call(.POST, "/admin/v1/tokens/\(pathSegment(id))/suspend")) }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Lift a token's suspension.")
        @Argument var id: String
        @OptionGroup var admin: AdminOptions
        func run() async throws { try printJSON(try await admin.call(.POST, "/admin/v1/tokens/\(pathSegment(id))/resume")) }
    }
}
