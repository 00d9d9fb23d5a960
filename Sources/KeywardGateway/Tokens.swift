import Crypto
import Foundation
import KeywardStorage

/// Bearer tokens: 256 random bits, shown once, kept only as their SHA-256.
enum Tokens {
    /// A new token value and its public id.
    static func generate() -> (value: Secret, id: String) {
        (Secret("kw_" + base64URL(random(32))), "tok_" + hex(random(8)))
    }

    /// A plain hash suffices: tokens are random, not passwords, so there is nothing to brute-force.
    static func hash(_ value: String) -> [UInt8] { Array(SHA256.hash(data: Array(value.utf8))) }

    /// A record or request id with `prefix`.
    static func identifier(_ prefix: String) -> String { prefix + base64URL(random(15)) }

    static func random(_ count: Int) -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &g) }
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}

/// Who is calling: from a verified token.
struct Principal: Sendable {
    let tokenID: String
    let role: TokenRecord.Role
    let tenant: Tenant?
}
