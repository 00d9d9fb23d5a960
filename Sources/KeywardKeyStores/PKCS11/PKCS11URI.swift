import Foundation
import KeywardCrypto

/// An RFC 7512 PKCS#11 URI naming a key: `token=…;object=…[;id=…]` with `module-path=`, and
/// `pin-value=` or `pin-source=` (a file path or `file:` URI) as query attributes.
/// The PIN is read into secret memory and never printed.
public struct PKCS11URI: Sendable, CustomStringConvertible {
    public var token: String
    public var object: String
    public var id: [UInt8]?
    public var modulePath: String
    let pin: SecretBytes?

    /// Parses the part after `pkcs11:`.
    public init(_ body: String) throws {
        let (pathPart, queryPart) = body.firstIndex(of: "?").map { (String(body[..<$0]), String(body[body.index(after: $0)...])) } ?? (body, "")
        var path: [String: [UInt8]] = [:]
        for attribute in pathPart.split(separator: ";") where !attribute.isEmpty {
            let (k, v) = try Self.pair(attribute)
            path[k] = v
        }
        var query: [String: [UInt8]] = [:]
        for attribute in queryPart.split(separator: "&") where !attribute.isEmpty {
            let (k, v) = try Self.pair(attribute)
            query[k] = v
        }
        guard let token = path["token"].flatMap({ String(bytes: $0, encoding: .utf8) }), !token.isEmpty,
              let object = path["object"].flatMap({ String(bytes: $0, encoding: .utf8) }), !object.isEmpty else {
            throw KeyStoreError(.invalidArgument, "a pkcs11: key needs token= and object= (RFC 7512)")
        }
        guard let module = query["module-path"].flatMap({ String(bytes: $0, encoding: .utf8) }) ?? ProcessInfo.processInfo.environment["KEYWARD_PKCS11_MODULE"] else {
            throw KeyStoreError(.invalidArgument, "a pkcs11: key needs ?module-path=/path/to/module.so (or KEYWARD_PKCS11_MODULE)")
        }
        self.token = token
        self.object = object
        self.id = path["id"]
        self.modulePath = module
        if let value = query["pin-value"] {
            pin = SecretBytes(copying: value)
        } else if let source = query["pin-source"].flatMap({ String(bytes: $0, encoding: .utf8) }) {
            let file = source.hasPrefix("file:") ? String(source.dropFirst(5)).replacingOccurrences(of: "///", with: "/") : source
            guard let raw = try? SecretBytes(contentsOfFile: file) else {
                throw KeyStoreError(.invalidArgument, "cannot read the PIN file \(file)")
            }
            // Drop a trailing newline without making an unwiped copy.
            pin = raw.withUnsafeBytes { bytes in
                var n = bytes.count
                while n > 0, bytes[n - 1] == 0x0A || bytes[n - 1] == 0x0D { n -= 1 }
                return SecretBytes(copying: bytes[0..<n])
            }
        } else {
            pin = nil
        }
    }

    /// The key's identity without module or PIN: what encrypted data keys record.
    public var identity: String {
        var s = "token=\(Self.encode(Array(token.utf8)));object=\(Self.encode(Array(object.utf8)))"
        if let id { s += ";id=\(Self.encode(id, all: true))" }
        return s
    }

    public var description: String { "pkcs11:\(identity)" }

    private static func pair(_ attribute: Substring) throws -> (String, [UInt8]) {
        guard let eq = attribute.firstIndex(of: "=") else {
            throw KeyStoreError(.invalidArgument, "a pkcs11: URI attribute is NAME=VALUE")
        }
        return (String(attribute[..<eq]), try decode(attribute[attribute.index(after: eq)...]))
    }

    static func decode(_ text: Substring) throws -> [UInt8] {
        var out: [UInt8] = []
        var bytes = Array(text.utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "%") {
                guard bytes.count >= 2, let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) else {
                    throw KeyStoreError(.invalidArgument, "bad percent-encoding in a pkcs11: URI")
                }
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return out
    }

    static func encode(_ bytes: [UInt8], all: Bool = false) -> String {
        let safe = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8)
        return bytes.map { !all && safe.contains($0) ? String(UnicodeScalar($0)) : String(format: "%%%02X", $0) }.joined()
    }
}
