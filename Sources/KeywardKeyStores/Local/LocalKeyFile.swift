import Foundation

/// One master key on disk (`keys/NAME.json`). Material is never stored in the clear: each version's
/// 32 bytes are AES-256-GCM-sealed under the root key with the key name and version as AAD, so a
/// version cannot be moved to another key or version.
struct LocalKeyFile: Codable {
    struct Version: Codable {
        var version: UInt32
        var created: Date
        /// base64 of IV || sealed material || tag; nil once destroyed.
        var material: String?
    }

    var name: String
    var created: Date
    var state: KeyState
    var deletionDate: Date?
    var versions: [Version]

    var current: Version? { versions.last }

    static func materialAAD(name: String, version: UInt32) -> [UInt8] {
        Array("keyward-local-key:\(name):\(version)".utf8)
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return e
    }()

    static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }()
}
