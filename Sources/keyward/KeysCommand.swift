import ArgumentParser
import Foundation
import KeywardKeyStores

/// `keyward keys …`: master key life cycle, against the store a reference names.
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Create, inspect and manage master keys in a key store.",
        subcommands: [Create.self, List.self, Show.self, Enable.self, Disable.self, Rotate.self,
                      ScheduleDeletion.self, CancelDeletion.self])

    /// One key reference and the store options.
    struct Target: ParsableArguments {
        @Argument(help: "The key: local:NAME, aws-kms:ARN, pkcs11:token=…;object=…?module-path=…&pin-source=… or vault-transit:NAME[?mount=M] or kmip:UID|name=LABEL")
        var reference: String

        @OptionGroup var stores: KeyStoreOptions

        func resolve() throws -> (store: any KeyStore, keyID: String) {
            let ref = try KeyReference.parse(reference)
            return (try stores.keyStores().store(for: ref), ref.keyID)
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a key: local:NAME, pkcs11:token=…;object=…, vault-transit:NAME[?mount=M], kmip:name=LABEL, kmip (prints the new key's UID), or aws-kms (with --region) which prints the new key's ARN.")
        @Argument(help: "local:NAME, pkcs11:…, vault-transit:NAME, kmip:name=LABEL, kmip or aws-kms.") var reference: String
        @Option(help: "A description for an AWS KMS key.") var description: String?
        @OptionGroup var stores: KeyStoreOptions
        func run() async throws {
            // A bare scheme where the store names the key: aws-kms (an ARN), kmip (a UID).
            let bare = ["aws-kms", "kmip"].contains(reference)
            let ref = bare ? KeyReference(scheme: reference, keyID: "") : try KeyReference.parse(reference)
            let store = try stores.keyStores().store(for: ref)
            print(format(try await store.createKey(name: ref.scheme == "aws-kms" ? description : bare ? nil : ref.keyID)))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the keys of a store: local, aws-kms (with --region), vault-transit (its transit mount) or kmip.")
        @Argument(help: "The store: local, aws-kms, vault-transit or kmip.") var scheme: String = "local"
        @OptionGroup var stores: KeyStoreOptions
        func run() async throws {
            let store = try stores.keyStores().store(for: KeyReference(scheme: scheme, keyID: ""))
            for key in try await store.listKeys() { print(format(key)) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Describe a key.")
        @OptionGroup var target: Target
        func run() async throws {
            let (store, keyID) = try target.resolve()
            print(format(try await store.describe(keyID: keyID)))
        }
    }

    struct Enable: GatewayAwareKeyAction {
        static let configuration = CommandConfiguration(
            abstract: "Enable a disabled key (with --url, through a running gateway's admin API).")
        static let action = "enable"
        @OptionGroup var target: Target
        @OptionGroup var admin: AdminOptions
        static func act(_ store: any KeyStore, _ keyID: String) async throws { try await store.enableKey(keyID: keyID) }
    }

    struct Disable: GatewayAwareKeyAction {
        static let configuration = CommandConfiguration(
            abstract: "Disable a key: it wraps and unwraps nothing until enabled. With --url, through a running gateway, which also drops its cached data keys at once.")
        static let action = "disable"
        @OptionGroup var target: Target
        @OptionGroup var admin: AdminOptions
        static func act(_ store: any KeyStore, _ keyID: String) async throws { try await store.disableKey(keyID: keyID) }
    }

    struct Rotate: GatewayAwareKeyAction {
        static let configuration = CommandConfiguration(
            abstract: "Make a new key version; older versions still unwrap. With --url, through a running gateway, whose new data keys then use it at once.")
        static let action = "rotate"
        @OptionGroup var target: Target
        @OptionGroup var admin: AdminOptions
        static func act(_ store: any KeyStore, _ keyID: String) async throws { try await store.rotateKey(keyID: keyID) }
    }

    struct ScheduleDeletion: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "schedule-deletion",
            abstract: "Destroy a key after a waiting period; it refuses every operation meanwhile. With --url, a gateway keeps the period for stores that destroy at once (vault-transit, kmip).")
        @OptionGroup var target: Target
        @Option(help: "Waiting period in days, 7 to 30.") var days: Int
        @OptionGroup var admin: AdminOptions
        func validate() throws {
            guard (7...30).contains(days) else { throw ValidationError("--days must be 7 to 30") }
        }
        func run() async throws {
            if admin.url != nil {
                try printJSON(try await admin.call(.POST, "/admin/v1/keys/\(pathSegment(target.reference))/schedule-deletion", ["days": days]))
                return
            }
            let (store, keyID) = try target.resolve()
            let date = try await store.scheduleKeyDeletion(keyID: keyID, days: days)
            print("\(target.reference) will be destroyed on \(date.formatted(.iso8601))")
        }
    }

    struct CancelDeletion: GatewayAwareKeyAction {
        static let configuration = CommandConfiguration(
            commandName: "cancel-deletion",
            abstract: "Cancel a scheduled deletion; the key comes back disabled.")
        static let action = "cancel-deletion"
        @OptionGroup var target: Target
        @OptionGroup var admin: AdminOptions
        static func act(_ store: any KeyStore, _ keyID: String) async throws { try await store.cancelKeyDeletion(keyID: keyID) }
    }
}

/// Enable/disable/rotate/cancel-deletion: on the store directly, or with `--url` through a gateway, whose cached data
/// keys a direct change would leave in use until they age out.
protocol GatewayAwareKeyAction: AsyncParsableCommand {
    static var action: String { get }
    var target: KeysCommand.Target { get }
    /// `--url` given: through the gateway; otherwise on the store directly.
    var admin: AdminOptions { get }
    static func act(_ store: any KeyStore, _ keyID: String) async throws
}

extension GatewayAwareKeyAction {
    func run() async throws {
        guard admin.url != nil else {
            let (store, keyID) = try target.resolve()
            try await Self.act(store, keyID)
            return
        }
        let key = try await admin.call(.POST, "/admin/v1/keys/\(pathSegment(target.reference))/\(Self.action)") as? [String: Any]
        if let state = key?["state"] as? String {
            // Where Keyward's state and the store's differ, both: a key revoked by Keyward alone.
            print("\(target.reference) state=\(state)" + ((key?["store_state"] as? String).map { " store_state=\($0) (Keyward's own state holds)" } ?? ""))
        }
    }
}

/// One line per key: `REFERENCE state=… versions=… created=… [deletion=…] [rotation=…]`.
func format(_ key: KeyDescription) -> String {
    var parts = [key.reference, "state=\(key.state.rawValue)"]
    if let versions = key.versions { parts.append("versions=\(versions)") }
    if let created = key.created { parts.append("created=\(created.formatted(.iso8601))") }
    if let deletion = key.deletionDate { parts.append("deletion=\(deletion.formatted(.iso8601))") }
    if let rotation = key.rotationEnabled { parts.append("rotation=\(rotation ? "on" : "off")") }
    if let min = key.minDecryptionVersion { parts.append("min_decryption_version=\(min)") }
    if let store = key.storeState { parts.append("store_state=\(store.rawValue)") }
    return parts.joined(separator: " ")
}
