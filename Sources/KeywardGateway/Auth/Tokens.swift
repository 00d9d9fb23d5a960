import KeywardCrypto
import Crypto
import Foundation
import KeywardStorage

/// Bearer tokens: 256 random bits, shown once, kept only as their SHA-256.
enum Tokens {
    /// A new token value and its public id.
    static func generate() -> (value: Secret, id: String) {
        (Secret(bytes: token(random: SecretBytes(randomCount: 32))), identifier("tok_"))
    }

    /// `kw_` and the unpadded base64url of `random`, written straight into wiped memory: no
    /// `String` of the token exists until one is asked for.
    static func token(random: SecretBytes) -> SecretBytes {
        let prefix = Array("kw_".utf8)
        return SecretBytes(count: prefix.count + (random.count * 4 + 2) / 3) { out in
            out.copyBytes(from: prefix)
            random.withUnsafeBytes { r in
                var o = prefix.count
                func put(_ sextet: UInt32) {
                    out[o] = base64URLAlphabet[Int(sextet & 63)]
                    o += 1
                }
                var i = 0
                while i + 3 <= r.count {
                    let v = UInt32(r[i]) << 16 | UInt32(r[i + 1]) << 8 | UInt32(r[i + 2])
                    put(v >> 18); put(v >> 12); put(v >> 6); put(v)
                    i += 3
                }
                switch r.count - i {
                case 1: let v = UInt32(r[i]) << 16; put(v >> 18); put(v >> 12)
                case 2: let v = UInt32(r[i]) << 16 | UInt32(r[i + 1]) << 8; put(v >> 18); put(v >> 12); put(v >> 6)
                default: break
                }
            }
        }
    }

    /// A plain hash suffices: tokens are random, not passwords, so there is nothing to brute-force.
    static func hash(_ value: String) -> [UInt8] { Array(SHA256.hash(data: Array(value.utf8))) }

    /// The hash of a token held as a ``Secret``, without a `String` copy of it.
    static func hash(_ token: Secret) -> [UInt8] { token.withUnsafeBytes { Array(SHA256.hash(data: $0)) } }

    /// A record or token id: `prefix`, 8 base-62 digits of the time in milliseconds, then 16 random ones
    /// (about 95 bits). Ids of one tenant sort by time, so the id index grows at its right edge
    /// instead of dirtying random pages on every insert. Built by hand: it is on every request's
    /// path, and Foundation's base64 and string replacing are slow.
    static func identifier(_ prefix: String, now: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000)) -> String {
        var out = [UInt8](prefix.utf8)
        var time = [UInt8](repeating: 0, count: 8)
        var t = now
        for i in (0..<8).reversed() {
            time[i] = alphabet[Int(t % 62)]
            t /= 62
        }
        out += time
        var g = SystemRandomNumberGenerator()
        for _ in 0..<2 {
            var n = g.next()
            for _ in 0..<8 {  // 8 digits of base 62 use 48 of the 64 bits
                out.append(alphabet[Int(n % 62)])
                n /= 62
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    private static let base64URLAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
}
