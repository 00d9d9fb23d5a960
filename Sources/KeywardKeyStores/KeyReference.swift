/// A master key named in Keyward's one key-reference syntax: `local:NAME`, `aws-kms:ARN`, an
/// RFC 7512 `pkcs11:` URI, `vault-transit:NAME[?mount=MOUNT]`, or `kmip:UID` / `kmip:name=LABEL`.
public struct KeyReference: Hashable, Sendable, CustomStringConvertible {
    /// `local`, `aws-kms`, `pkcs11`, `vault-transit` or `kmip`.
    public let scheme: String
    /// What follows the scheme: a name, an ARN, the URI's body.
    public let keyID: String

    public init(scheme: String, keyID: String) {
        self.scheme = scheme
        self.keyID = keyID
    }

    /// The schemes that name key-store keys (raw keyrings are `raw-aes:` / `raw-rsa:`).
    public static let schemes = ["local", "aws-kms", "pkcs11", "vault-transit", "kmip"]

    /// Parses a reference; nil if it does not start with a key-store scheme.
    public init?(parsing text: String) {
        guard let colon = text.firstIndex(of: ":") else { return nil }
        let scheme = String(text[..<colon])
        guard Self.schemes.contains(scheme) else { return nil }
        self.init(scheme: scheme, keyID: String(text[text.index(after: colon)...]))
    }

    /// Parses a reference, with a clear error for each malformed shape.
    public static func parse(_ text: String) throws -> KeyReference {
        guard let reference = KeyReference(parsing: text) else {
            throw KeyStoreError(.invalidArgument, "a key reference looks like local:NAME, aws-kms:ARN, pkcs11:…, vault-transit:NAME or kmip:UID")
        }
        switch reference.scheme {
        case "local":
            try LocalKeyStore.validateName(reference.keyID)
        case "aws-kms":
            _ = try KeyReference.awsRegion(ofARN: reference.keyID)
        case "pkcs11":
            _ = try PKCS11URI(reference.keyID)
        case "vault-transit":
            _ = try VaultTransitKeyStore.KeyName(reference.keyID)
        case "kmip":
            _ = try KMIPKeyStore.KeyName(reference.keyID)
        default:
            break
        }
        return reference
    }

    public var description: String { "\(scheme):\(keyID)" }

    /// Whether the reference holds a secret: a `pkcs11:` URI's `pin-value=`. Such a reference
    /// may be used where it is given (a command's argument) but must not be kept: whatever keeps
    /// a reference (a tenant's row, key states, audit events, logs, alerts) would keep the PIN.
    public var holdsSecret: Bool {
        guard scheme == "pkcs11", let mark = keyID.firstIndex(of: "?") else { return false }
        return keyID[keyID.index(after: mark)...].split(separator: "&").contains { $0.prefix { $0 != "=" } == "pin-value" }
    }

    /// One spelling of the reference for keys that can be spelt several ways in its syntax
    /// (`vault-transit:K?mount=transit` is `vault-transit:K`), under which Keyward keeps its own
    /// state of the key. Other schemes are kept as written: aliases that only the store resolves
    /// (a KMIP name and its UIDs, an AWS alias and its key) are each held by the store's own
    /// disable, which those stores have.
    public var canonical: String {
        if scheme == "vault-transit", let name = try? VaultTransitKeyStore.KeyName(keyID) { return "\(scheme):\(name.keyID)" }
        return description
    }

    /// The region of a KMS key ARN (`arn:PARTITION:kms:REGION:ACCOUNT:key/ID` or `…:alias/NAME`).
    public static func awsRegion(ofARN arn: String) throws -> String {
        let parts = arn.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0] == "arn", parts[2] == "kms", !parts[3].isEmpty,
              parts[5].hasPrefix("key/") || parts[5].hasPrefix("alias/") else {
            throw KeyStoreError(.invalidArgument, "an aws-kms key is named by its ARN: arn:aws:kms:REGION:ACCOUNT:key/ID")
        }
        return String(parts[3])
    }
}
