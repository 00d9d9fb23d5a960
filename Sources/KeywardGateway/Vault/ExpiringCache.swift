/// A small map whose entries expire `ttl` seconds after insertion. Pure state: the caller passes
/// the time and holds the lock. Used for lookups on every request (token → principal, a tenant's
/// provider key) that the gateway itself invalidates on change; the TTL bounds how long a change
/// made by another process sharing the database goes unseen.
struct ExpiringCache<Key: Hashable, Value> {
    let ttl: Double
    let capacity: Int
    private var entries: [Key: (value: Value, expires: Double)] = [:]
    /// Moves on every `removeAll`: a value read from the database before a change must not be
    /// inserted after the change cleared the cache (it would be stale for a whole TTL).
    private(set) var generation: UInt64 = 0

    init(ttl: Double, capacity: Int = 10_000) {
        self.ttl = ttl
        self.capacity = capacity
    }

    mutating func value(for key: Key, now: Double) -> Value? {
        guard let entry = entries[key] else { return nil }
        guard entry.expires > now else {
            entries[key] = nil
            return nil
        }
        return entry.value
    }

    /// Inserts `value` unless the cache was cleared since `generation` was read (the value may
    /// predate that change).
    mutating func insert(_ value: Value, for key: Key, now: Double, ifGeneration expected: UInt64) {
        guard expected == generation else { return }
        insert(value, for: key, now: now)
    }

    mutating func insert(_ value: Value, for key: Key, now: Double) {
        if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }  // rare; simplest bound
        entries[key] = (value, now + ttl)
    }

    mutating func removeAll() {
        entries.removeAll()
        generation &+= 1
    }

    var count: Int { entries.count }
}
