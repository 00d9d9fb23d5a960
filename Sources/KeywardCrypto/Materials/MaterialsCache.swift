/// The bounds on reusing one data key, as in the ESDK's caching materials manager.
public struct CacheLimits: Sendable, Hashable {
    /// Seconds an entry may be used after it was created.
    public var maxAge: Double
    /// Messages one data key may encrypt.
    public var maxMessages: UInt64
    /// Plaintext bytes one data key may encrypt.
    public var maxBytes: UInt64
    /// Entries kept; the least recently used is dropped first.
    public var capacity: Int

    public init(maxAge: Double, maxMessages: UInt64 = 1 << 32, maxBytes: UInt64 = UInt64(Int64.max), capacity: Int = 1000) {
        self.maxAge = maxAge
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
        self.capacity = capacity
    }
}

/// A pure cache of materials with usage accounting: no clock, no lock, no I/O — the caller passes
/// the time in and holds the lock. That keeps every limit testable in isolation.
public struct MaterialsCache<Key: Hashable, Value> {
    struct Entry {
        var value: Value
        var created: Double
        var messages: UInt64
        var bytes: UInt64
        var lastUse: UInt64
    }

    public let limits: CacheLimits
    private var entries: [Key: Entry] = [:]
    private var useCounter: UInt64 = 0

    public init(limits: CacheLimits) { self.limits = limits }

    public var count: Int { entries.count }

    /// Takes an entry for one more message of `bytes` plaintext bytes and counts that use. An entry
    /// that is too old, or that this message would carry past a limit, is evicted and nil returned.
    public mutating func useForEncryption(_ key: Key, bytes: UInt64, now: Double) -> Value? {
        guard var e = entries[key] else { return nil }
        let messages = e.messages + 1
        let (total, overflow) = e.bytes.addingReportingOverflow(bytes)
        guard now - e.created < limits.maxAge, messages <= limits.maxMessages, !overflow, total <= limits.maxBytes else {
            entries[key] = nil
            return nil
        }
        e.messages = messages
        e.bytes = total
        e.lastUse = tick()
        entries[key] = e
        return e.value
    }

    /// Looks up an entry for decryption; only its age limits it.
    public mutating func useForDecryption(_ key: Key, now: Double) -> Value? {
        guard var e = entries[key] else { return nil }
        guard now - e.created < limits.maxAge else {
            entries[key] = nil
            return nil
        }
        e.lastUse = tick()
        entries[key] = e
        return e.value
    }

    /// Stores fresh materials, already used for one message of `bytes` bytes (0 and 0 for decryption).
    public mutating func insert(_ key: Key, value: Value, messages: UInt64, bytes: UInt64, now: Double) {
        guard limits.capacity > 0 else { return }
        if entries[key] == nil && entries.count >= limits.capacity,
           let oldest = entries.min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
            entries[oldest] = nil
        }
        entries[key] = Entry(value: value, created: now, messages: messages, bytes: bytes, lastUse: tick())
    }

    /// Drops every entry whose value matches, for example all data keys of a revoked master key.
    public mutating func removeAll(where shouldRemove: (Value) -> Bool) {
        entries = entries.filter { !shouldRemove($0.value.value) }
    }

    private mutating func tick() -> UInt64 {
        useCounter += 1
        return useCounter
    }
}
