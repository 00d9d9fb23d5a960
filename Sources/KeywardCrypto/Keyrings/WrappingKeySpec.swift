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

    private static func rejectUnknown(_ rest: [String: String], _ scheme: String) throws {
        if let extra = rest.keys.sorted().first {
            throw KeywardCryptoError(.invalidArgument, "\(scheme) wrapping key: unknown field \(extra)")
        }
    }

    private static func loadKey(_ value: String) throws -> SecretBytes {
        if value.hasPrefix("@") { return try SecretBytes(contentsOfFile: String(value.dropFirst())) }
        if value.hasPrefix("base64:") {
            guard let data = Data(base64Encoded: String(value.dropFirst(7))) else {
                throw KeywardCryptoError(.invalidKey, "the key= value is not valid base64")
            }
            return SecretBytes(copying: data)
        }
        throw KeywardCryptoError(.invalidArgument, "key= takes @FILE or base64:…")
    }
}
