import Foundation
import KeywardStorage
import Logging
import PostgresNIO

/// Tells every replica what changed (a key disabled, a policy replaced, a job submitted) through
/// PostgreSQL's LISTEN/NOTIFY, so each purges or refreshes its caches at once.
///
/// A notification is lost if nobody is listening when it is sent, so `follow` reports whether it
/// is listening: a replica that is not must not trust its caches, and must drop them all when it
/// listens again (it cannot know what it missed).
public final class PostgresChangeFeed: ChangeFeed {
    public static let channel = "keyward_changes"
    let store: PostgresRecordStore
    let url: PostgresURL
    let logger: Logger
    /// Tells this process's own notifications from others'.
    public let origin = UUID().uuidString.prefix(8).lowercased()

    public init(store: PostgresRecordStore, logger: Logger) {
        self.store = store
        self.url = store.url
        self.logger = logger
    }

    /// Sends `change` to every other listening replica.
    public func publish(_ change: String) async throws {
        _ = try await store.query(SQLStatement("SELECT pg_notify(?, ?)", [.text(Self.channel), .text(origin + " " + change)])) { _ in }
    }

    /// Listens until cancelled, reconnecting with back-off: `onState(true)` once listening (again),
    /// `onState(false)` when the connection is lost, `onChange` for each other replica's change.
    public func follow(onState: @escaping @Sendable (Bool) async -> Void, onChange: @escaping @Sendable (String) async -> Void) async {
        var delay = Duration.milliseconds(100)
        var id = 0
        while !Task.isCancelled {
            id += 1
            if let connection = try? await PostgresConnection.connect(configuration: url.connectionConfiguration(), id: id, logger: logger) {
                try? await listen(on: connection, onState: onState, onChange: onChange) { delay = .milliseconds(100) }
                // Bounded: a connection to a dead server may not answer its close.
                try? await PostgresRecordStore.withDeadline(.seconds(2)) { try await connection.close() }
            }
            if Task.isCancelled { return }
            await onState(false)
            logger.warning("change notifications lost; caches are bypassed until they resume", metadata: ["database": "\(url)"])
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(2))
        }
    }

    /// Listens on `connection` until it fails or the task is cancelled.
    private func listen(on connection: PostgresConnection, onState: @escaping @Sendable (Bool) async -> Void,
                        onChange: @escaping @Sendable (String) async -> Void, listening: () -> Void) async throws {
        try await connection.listen(on: Self.channel) { notifications in
            listening()
            await onState(true)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await n in notifications {
                        let parts = n.payload.split(separator: " ", maxSplits: 1)
                        guard parts.count == 2, parts[0] != self.origin else { continue }
                        await onChange(String(parts[1]))
                    }
                    throw CancellationError()
                }
                // A dead peer may never close the socket: ask something every second.
                group.addTask {
                    while true {
                        try await Task.sleep(for: .seconds(1))
                        try await PostgresRecordStore.withDeadline(.seconds(2)) {
                            _ = try await connection.query("SELECT 1", logger: self.logger)
                        }
                    }
                }
                try await group.next()
                group.cancelAll()
            }
        }
    }
}
