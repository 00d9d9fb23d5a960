/// Tells every replica what changed (a key disabled, a policy replaced, a job submitted), so each
/// drops what it cached at once. Engines that one process owns have none.
///
/// A notice sent while a replica is not listening is lost to it, so ``follow(onState:onChange:)``
/// says whether it is listening: a replica that is not must not trust its caches, and must drop
/// them all when it listens again.
public protocol ChangeFeed: Sendable {
    /// Sends `change` to every other listening replica.
    func publish(_ change: String) async throws
    /// Listens until cancelled, reconnecting as needed: `onState(true)` once listening (again),
    /// `onState(false)` when the connection is lost, `onChange` for each other replica's change.
    func follow(onState: @escaping @Sendable (Bool) async -> Void, onChange: @escaping @Sendable (String) async -> Void) async
}
