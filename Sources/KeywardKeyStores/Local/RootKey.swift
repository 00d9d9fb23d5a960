import _CryptoExtras
import Crypto
import Foundation
import KeywardCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Where the local key store's root key comes from: the key that encrypts every master key's
/// material at rest.
public enum RootKeySource: Sendable, CustomStringConvertible {
    /// A 32-byte file, created with mode 0600 when the key store is created.
    case file(String)
    /// A passphrase stretched with scrypt (N = 2^15, r = 8, p = 1) and the store's salt.
    case passphrase(SecretBytes)

    /// `KEYWARD_ROOT_PASSPHRASE`, else `--root-key-file` / `KEYWARD_ROOT_KEY_FILE`, else
    /// `root.key` inside the key store folder.
    public static func fromEnvironment(keyStoreFolder: String, rootKeyFile: String? = nil) -> RootKeySource {
        let env = ProcessInfo.processInfo.environment
        if let passphrase = env["KEYWARD_ROOT_PASSPHRASE"], !passphrase.isEmpty {
            return .passphrase(SecretBytes(copying: Array(passphrase.utf8)))
        }
        return .file(rootKeyFile ?? env["KEYWARD_ROOT_KEY_FILE"] ?? "\(keyStoreFolder)/root.key")
    }

    public var description: String {
        switch self {
        case .file(let path): "root key file \(path)"
        case .passphrase: "root passphrase <redacted>"
        }
    }
}

/// The key store's header (`keystore.json`): how the root key is made, and a check value that
/// tells a wrong root key from damaged files.
struct KeyStoreHeader: Codable {
    var format: Int
    var rootKey: String  // "file" or "passphrase"
    var salt: String?  // base64, passphrase stores
    var check: String  // base64 of IV || tag over nothing, AAD = checkLabel

    static let checkLabel = Array("keyward-local-keystore-check".utf8)
}

enum RootKey {
    /// Opens the root key and verifies it against the store's `header`; for a new store (no
    /// header), makes the root key (unless a file is given that already exists) and returns the
    /// header to save.
    static func open(header data: Data?, source: RootKeySource) throws -> (key: SecretBytes, newHeader: Data?) {
        if let data {
            guard let header = try? JSONDecoder().decode(KeyStoreHeader.self, from: data),
                  let check = Data(base64Encoded: header.check), check.count == 28 else {
                throw KeyStoreError(.storeCorrupt, "the key store header is not a Keyward key store header")
            }
            let key = try load(source, header: header)
            let iv = Array(check.prefix(12)), tag = Array(check.suffix(16))
            guard (try? AESGCM.open(key: key, iv: iv, aad: KeyStoreHeader.checkLabel, sealed: tag)) != nil else {
                throw KeyStoreError(.storeCorrupt, "the root key (\(source)) does not open this key store")
            }
            return (key, nil)
        }
        var header = KeyStoreHeader(format: 1, rootKey: "file", salt: nil, check: "")
        let key: SecretBytes
        switch source {
        case .file(let path):
            key = try FileManager.default.fileExists(atPath: path) ? readKeyFile(path) : createKeyFile(path)
        case .passphrase:
            header.rootKey = "passphrase"
            header.salt = Data(SecretBytes(randomCount: 16).withUnsafeBytes { Array($0) }).base64EncodedString()
            key = try load(source, header: header)
        }
        let iv = SecretBytes(randomCount: 12).withUnsafeBytes { Array($0) }
        let tag = try AESGCM.seal(key: key, iv: iv, aad: KeyStoreHeader.checkLabel, plaintext: [])
        header.check = Data(iv + tag).base64EncodedString()
        return (key, try JSONEncoder().encode(header))
    }

    private static func load(_ source: RootKeySource, header: KeyStoreHeader) throws -> SecretBytes {
        switch (source, header.rootKey) {
        case (.file(let path), "file"):
            return try readKeyFile(path)
        case (.passphrase(let passphrase), "passphrase"):
            guard let salt = header.salt.flatMap({ Data(base64Encoded: $0) }) else {
                throw KeyStoreError(.storeCorrupt, "the key store header has no salt")
            }
            do {
                let derived = try passphrase.withUnsafeBytes { p in
                    try KDF.Scrypt.deriveKey(from: Array(p), salt: salt, outputByteCount: 32, rounds: 1 << 15,
                                             blockSize: 8, parallelism: 1)
                }
                return derived.withUnsafeBytes { SecretBytes(copying: $0) }
            } catch {
                throw KeyStoreError(.storeCorrupt, "scrypt failed")
            }
        case (_, let kind):
            throw KeyStoreError(.storeCorrupt, "this key store's root key is a \(kind), but a \(source) was given")
        }
    }

    private static func readKeyFile(_ path: String) throws -> SecretBytes {
        let key: SecretBytes
        do {
            key = try SecretBytes(contentsOfFile: path)
        } catch {
            throw KeyStoreError(.keyUnavailable, "cannot read the root key file \(path)")
        }
        guard key.count == 32 else {
            throw KeyStoreError(.storeCorrupt, "the root key file \(path) must hold exactly 32 bytes")
        }
        return key
    }

    private static func createKeyFile(_ path: String) throws -> SecretBytes {
        let key = SecretBytes(randomCount: 32)
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FileSystem.error("cannot create the root key file \(path)") }
        defer { close(fd) }
        guard key.withUnsafeBytes({ FileSystem.writeAll(fd, $0) }), fsync(fd) == 0 else {
            throw FileSystem.error("cannot write the root key file \(path)")
        }
        return key
    }
}
