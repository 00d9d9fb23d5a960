/// Named values every replica shares: the sealed audit signing key, the local key store's header.
/// Only engines that several processes share have them; a data folder keeps such values as files.
public protocol SettingsStore: Sendable {
    /// The value stored under `name`, or nil.
    func setting(_ name: String) async throws -> [UInt8]?
    /// Stores `value` under `name` unless a value is there already.
    /// - Returns: the value stored now (another replica's, if it was first).
    func setSettingIfAbsent(_ name: String, _ value: [UInt8]) async throws -> [UInt8]
}
