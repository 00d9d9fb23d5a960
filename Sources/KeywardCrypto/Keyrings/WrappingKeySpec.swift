#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A wrapping key named in Keyward's one key-reference syntax, for the raw keyrings:
///
/// - `raw-aes:namespace=NS,name=NAME,key=@FILE` (FILE holds the raw 16, 24 or 32 bytes) or
///   `key=base64:…`
/// - `raw-rsa:namespace=NS,name=NAME,key=@PEM,padding=oaep-sha256|oaep-sha1|oaep-sha384|oaep-sha512|pkcs1`
///
/// Values cannot contain commas. Errors never repeat key material.
public enum WrappingKeySpec {
    /// Parses a spec and loads its key.
    public static func keyring(from spec: String) throws -> any Keyring {
        guard let colon = spec.firstIndex(of: ":") else {
            throw KeywardCryptoError(.invalidArgument, "a wrapping key looks like raw-aes:… or raw-rsa:…")
        }
        let scheme = String(spec[..<colon])
        var fields: [String: String] = [:]
        for part in spec[spec.index(after: colon)...].split(separator: ",", omittingEmptySubsequences: false) {
            guard let eq = part.firstIndex(of: "="), eq != part.startIndex else {
                throw KeywardCryptoError(.invalidArgument, "\(scheme) wrapping key: expected FIELD=VALUE pairs separated by commas")
            }
            let name = String(part[..<eq])
            guard fields[name] == nil else {
                throw KeywardCryptoError(.invalidArgument, "\(scheme) wrapping key: \(name) is given twice")
            }
            fields[name] = String(part[part.index(after: eq)...])
        }
        func take(_ name: String) throws -> String {
            guard let v = fields.removeValue(forKey: name), !v.isEmpty else {
                throw KeywardCryptoError(.invalidArgument, "\(scheme) wrapping key needs \(name)=")
            }
            return v
        }
        switch scheme {
        case "raw-aes":
            let namespace = try take("namespace"), name = try take("name")
            let key = try loadKey(try take("key"))
            try rejectUnknown(fields, scheme)
            return try RawAESKeyring(namespace: namespace, name: name, key: key)
        case "raw-rsa":
            let namespace = try take("namespace"), name = try take("name")
            let paddingText = try take("padding")
            guard let padding = RSAKey.Padding(rawValue: paddingText.lowercased()) else {
                throw KeywardCryptoError(.invalidArgument, "raw-rsa padding must be one of \(RSAKey.Padding.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let pem = try loadKey(try take("key"))
            try rejectUnknown(fields, scheme)
            let key = try pem.withUnsafeBytes { try RSAKey(pem: Array($0)) }
            return try RawRSAKeyring(namespace: namespace, name: name, key: key, padding: padding)
        default:
            throw KeywardCryptoError(.invalidArgument, "unknown wrapping key type \(scheme); expected raw-aes or raw-rsa")
        }
    }

    /// A keyring for several specs: the first generates the data key, every one wraps it, any one decrypts.
    public static func keyring(from specs: [String]) throws -> any Keyring {
        let keyrings = try specs.map(keyring(from:))
        guard let first = keyrings.first else {
            throw KeywardCryptoError(.invalidArgument, "at least one wrapping key is needed")
        }
        return keyrings.count == 1 ? first : try MultiKeyring(generator: first, children: Array(keyrings.dropFirst()))
    }

    private static func rejectUnknown(_ rest: [String: String], _ scheme: String) throws {
        if let extra = rest.keys.sorted().first {
            throw KeywardCryptoError(.invalidArgument, "\(scheme) wrapping key: unknown field \(extra)")
        }
    }

    private static func loadKey(_ value: String) throws -> SecretBytes {
        if value.hasPrefix("@") { return try readSecretFile(String(value.dropFirst())) }
        if value.hasPrefix("base64:") {
            guard let data = Data(base64Encoded: String(value.dropFirst(7))) else {
                throw KeywardCryptoError(.invalidKey, "the key= value is not valid base64")
            }
            return SecretBytes(copying: data)
        }
        throw KeywardCryptoError(.invalidArgument, "key= takes @FILE or base64:…")
    }

    /// Reads a small key file straight into secret memory.
    static func readSecretFile(_ path: String) throws -> SecretBytes {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw KeywardCryptoError(.invalidKey, "cannot open key file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size <= 1 << 20 else {
            throw KeywardCryptoError(.invalidKey, "key file \(path) is not a regular file of at most 1 MiB")
        }
        let size = Int(st.st_size)
        return try SecretBytes(count: size) { buffer in
            var done = 0
            while done < size {
                let n = read(fd, buffer.baseAddress! + done, size - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw KeywardCryptoError(.invalidKey, "cannot read key file \(path)") }
                done += n
            }
        }
    }
}
