import Foundation
import KeywardKeyStores
import KeywardStorage

/// Keyward's own key states (revocations, deletion schedules), as every key store is seen through
/// them. Read from the database on each key-store call, never cached: a revocation then holds on
/// every replica as soon as it is written, and a replica that missed the change notice still sees
/// it. The read is cheap beside the store call it precedes, and store calls are rare (data keys
/// are cached, and every key change purges them on every replica).
struct StoredKeyStates: KeyStateOverlay {
    let store: any KeyStateRepository
    /// The time a deletion date is compared with.
    var now: @Sendable () -> Date = { Date() }

    /// A key past its deletion date is destroyed from then on, whether or not the deletion service
    /// (or the store keeping its own schedule) has destroyed its material yet.
    func state(of reference: String) async throws -> KeyStateOverride? {
        guard let row = try await store.keyState(key: reference) else { return nil }
        let deletionDate = row.deleteAt.map { Date(timeIntervalSince1970: Double($0) / 1000) }
        let state: KeyState = switch row.state {
        case .disabled: .disabled
        case .pendingDeletion: deletionDate.map { $0 <= now() } == true ? .destroyed : .pendingDeletion
        case .destroyed: .destroyed
        }
        return KeyStateOverride(state: state, deletionDate: deletionDate)
    }
}
