import Synchronization

/// At most `limit` holders of each named permit at once, the rest queued first come first
/// served: the decisions only, without tasks or time (``Permits`` runs it).
struct PermitCounts {
    let limit: Int
    private var held: [String: Int] = [:]
    private var queues: [String: [Int]] = [:]

    init(limit: Int) { self.limit = max(1, limit) }

    /// Whether `waiter` holds a permit of `name` now; if not, it is queued.
    mutating func acquire(_ name: String, waiter: Int) -> Bool {
        if held[name, default: 0] < limit, queues[name, default: []].isEmpty {
            held[name, default: 0] += 1
            return true
        }
        queues[name, default: []].append(waiter)
        return false
    }

    /// A holder gives its permit back: the first waiter, if any, now holds it.
    mutating func release(_ name: String) -> Int? {
        if var queue = queues[name], !queue.isEmpty {
            let next = queue.removeFirst()
            queues[name] = queue.isEmpty ? nil : queue
            return next
        }
        held[name, default: 1] -= 1
        if held[name] == 0 { held[name] = nil }
        return nil
    }

    /// A waiter gives up: true if it was still queued (it holds nothing); false if it was not.
    mutating func withdraw(_ name: String, waiter: Int) -> Bool {
        guard var queue = queues[name], let i = queue.firstIndex(of: waiter) else { return false }
        queue.remove(at: i)
        queues[name] = queue.isEmpty ? nil : queue
        return true
    }

    func holders(_ name: String) -> Int { held[name, default: 0] }
}

/// ``PermitCounts`` for tasks: a task waits for its permit (or its cancellation) and gives it
/// back when its work ends. Bounds the lines all batches of a replica send to one upstream.
final class Permits: Sendable {
    private struct State {
        var counts: PermitCounts
        var next = 0
        var waiting: [Int: CheckedContinuation<Void, any Error>] = [:]
        /// Waiters cancelled before they were queued.
        var cancelled: Set<Int> = []
    }
    private let state: Mutex<State>

    init(limit: Int) { state = Mutex(State(counts: PermitCounts(limit: limit))) }

    /// Runs `body` holding a permit of `name`; throws `CancellationError` if cancelled while waiting.
    func withPermit<T: Sendable>(_ name: String, _ body: () async throws -> T) async throws -> T {
        let id = state.withLock { s in
            s.next += 1
            return s.next
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let outcome: Result<Void, any Error>? = state.withLock { s in
                    if s.cancelled.remove(id) != nil { return .failure(CancellationError()) }
                    if s.counts.acquire(name, waiter: id) { return .success(()) }
                    s.waiting[id] = c
                    return nil
                }
                if let outcome { c.resume(with: outcome) }
            }
        } onCancel: {
            let c = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                if s.counts.withdraw(name, waiter: id) { return s.waiting.removeValue(forKey: id) }
                if s.waiting[id] == nil { s.cancelled.insert(id) }
                return nil
            }
            c?.resume(throwing: CancellationError())
        }
        defer { release(name, id) }
        return try await body()
    }

    private func release(_ name: String, _ id: Int) {
        let c = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            s.cancelled.remove(id)
            return s.counts.release(name).flatMap { s.waiting.removeValue(forKey: $0) }
        }
        c?.resume()
    }
}
