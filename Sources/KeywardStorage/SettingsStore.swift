/// Named values every process of a deployment shares: the sealed audit signing key, the local key
/// store's header. Every engine has them; a gateway on a data folder keeps its own as files there.
public protocol SettingsStore: Sendable {
    /// The value stored under `name`, or nil.
    func setting(_ name: String) async throws -> [UInt8]?
    /// Stores `value` under `name` unless a value is there already.
    /// - Returns: the value stored now (another replica's, if it was first).
    func setSettingIfAbsent(_ name: String, _ value: [UInt8]) async throws -> [UInt8]
}
