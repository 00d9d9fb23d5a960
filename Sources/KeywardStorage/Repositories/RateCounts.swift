// The rate counts repository: what each replica has counted per scope and minute, so that every
// replica can add the others' counts to its own.

/// What one replica counted for one scope (`tenant:NAME`, `token:ID`) in one minute.
public struct RateCount: Sendable, Hashable {
    public var scope: String
    /// Minutes since 1970.
    public var minute: Int64
    public var requests: Int64
    public var tokens: Int64

    public init(scope: String, minute: Int64, requests: Int64, tokens: Int64) {
        self.scope = scope
        self.minute = minute
        self.requests = requests
        self.tokens = tokens
    }
}

public protocol RateCountRepository: Sendable {
    /// Writes `replica`'s counts as they stand (totals, not increments: a write repeated or lost
    /// is made good by the next).
    func saveRateCounts(_ counts: [RateCount], replica: String) async throws
    /// The other replicas' counts from minute `since` on, added up per scope and minute.
    func rateCounts(since minute: Int64, excluding replica: String) async throws -> [RateCount]
    /// Deletes every replica's counts of minutes before `minute`.
    func deleteRateCounts(before minute: Int64) async throws
}

extension SQLStore {
    public func saveRateCounts(_ counts: [RateCount], replica: String) async throws {
        // A few hundred rows a statement, well under every engine's limit of parameters.
        for start in stride(from: 0, to: counts.count, by: 200) {
            let part = counts[start..<min(start + 200, counts.count)]
            try await execute(SQLStatement("""
                INSERT INTO rate_counts(scope, minute, replica, requests, tokens) VALUES \
                \(Array(repeating: "(?, ?, ?, ?, ?)", count: part.count).joined(separator: ", "))
                ON CONFLICT (scope, minute, replica) DO UPDATE SET requests = excluded.requests, tokens = excluded.tokens
                """, part.flatMap { [.text($0.scope), .integer($0.minute), .text(replica), .integer($0.requests), .integer($0.tokens)] }))
        }
    }

    public func rateCounts(since minute: Int64, excluding replica: String) async throws -> [RateCount] {
        try await query(SQLStatement("""
            SELECT scope, minute, CAST(SUM(requests) AS BIGINT), CAST(SUM(tokens) AS BIGINT) FROM rate_counts WHERE minute >= ? AND replica <> ?
            GROUP BY scope, minute
            """, [.integer(minute), .text(replica)])) { r in
            RateCount(scope: try r.text(0), minute: try r.int(1), requests: try r.int(2), tokens: try r.int(3))
        }
    }

    public func deleteRateCounts(before minute: Int64) async throws {
        try await execute(SQLStatement("DELETE FROM rate_counts WHERE minute < ?", [.integer(minute)]))
    }
}
