import Foundation
import KeywardAudit
import KeywardStorage

/// OpenAI's conversations as records of the tenant, all under the conversation's id: the
/// conversation object (kind `conversation`: id, creation time, metadata) and one record per item,
/// of kind `conversation.item.SEQ.ITEM` (SEQ: ten digits, in the order items were added; ITEM: the
/// item's id). Items are then listed in order, and found by id, from the clear kinds alone, and
/// the whole conversation is read in one query when a response continues it.
struct Conversations {
    let store: any RecordStore
    let vault: Vault
    let audit: AuditLog

    static let kind = "conversation"
    static let itemPrefix = "conversation.item."

    /// Where an item is: its position and id, from its record's kind; and when it expires.
    struct Entry {
        let seq: Int
        let itemID: String
        var expiresAt: Int64? = nil
        var kind: String { Conversations.itemKind(seq, itemID) }
        /// Past its expiry: listed and served as if the purge had deleted it (its position stays taken).
        func isExpired(at now: Int64) -> Bool { Record.isExpired(expiresAt, at: now) }
    }

    static func itemKind(_ seq: Int, _ itemID: String) -> String {
        let digits = String(seq)
        return itemPrefix + String(repeating: "0", count: max(0, 10 - digits.count)) + digits + "." + itemID
    }

    static func entry(_ kind: String, expiresAt: Int64? = nil) -> Entry? {
        guard kind.hasPrefix(itemPrefix) else { return nil }
        let rest = kind.dropFirst(itemPrefix.count)
        guard let dot = rest.firstIndex(of: "."), let seq = Int(rest[..<dot]) else { return nil }
        return Entry(seq: seq, itemID: String(rest[rest.index(after: dot)...]), expiresAt: expiresAt)
    }

    /// The conversation object's record, or 404 (also past its expiry, unless `includingExpired`:
    /// a delete still deletes it).
    func conversation(_ tenant: Tenant, _ id: String, includingExpired: Bool = false) async throws -> Record {
        guard id.hasPrefix("conv_"), let record = try await store.record(tenant: tenant.name, id: id, kind: Self.kind),
              includingExpired || !record.isExpired(at: Gateway.nowMs()) else {
            throw GatewayError.notFound("no conversation \(id)")
        }
        return record
    }

    /// The items of a conversation, in order, from their record headers (no body is read); expired
    /// ones too, whose positions stay taken (see ``Entry/isExpired(at:)``).
    func entries(_ tenant: Tenant, _ id: String) async throws -> [Entry] {
        var out: [Entry] = []
        var after: (id: String, kind: String)? = (id, Self.itemPrefix)
        while true {
            let page = try await store.recordHeaders(tenant: tenant.name, after: after, limit: 500)
            let mine = page.prefix { $0.id == id && $0.kind.hasPrefix(Self.itemPrefix) }
            out += mine.compactMap { Self.entry($0.kind, expiresAt: $0.expiresAt) }
            guard mine.count == page.count, page.count == 500, let last = page.last else { return out }
            after = (last.id, last.kind)
        }
    }

    /// Every item of a conversation, in order, and the last one's position, for a response that
    /// continues it: one query, the records opened after one audit event for the whole context.
    func allItems(_ tenant: Tenant, _ id: String, scope: AuditScope) async throws -> (items: [[String: Any]], lastSeq: Int) {
        let all = try await store.records(tenant: tenant.name, ids: [id])
            .filter { $0.kind.hasPrefix(Self.itemPrefix) }
            .sorted { $0.kind < $1.kind }
        // The next item goes after the last one stored, expired or not.
        let lastSeq = all.last.flatMap { Self.entry($0.kind)?.seq } ?? 0
        let now = Gateway.nowMs()
        let records = all.filter { !$0.isExpired(at: now) }
        let events = Vault.ReadEvents.context(record: "\(id)/context", detail: "\(records.count) items, to position \(lastSeq)")
        return (try await open(records, of: tenant, scope: scope, events: events), lastSeq)
    }

    /// Some items, as stored, each read after its own audit event.
    func items(_ tenant: Tenant, _ id: String, _ entries: [Entry], scope: AuditScope) async throws -> [[String: Any]] {
        var records: [Record] = []
        for e in entries {
            // Deleted meanwhile, or past its expiry (as if the purge had run).
            guard let r = try await store.record(tenant: tenant.name, id: id, kind: e.kind), !r.isExpired(at: Gateway.nowMs()) else { continue }
            records.append(r)
        }
        return try await open(records, of: tenant, scope: scope)
    }

    /// The items in `records`, read after their audit events.
    private func open(_ records: [Record], of tenant: Tenant, scope: AuditScope, events: Vault.ReadEvents = .perRecord) async throws -> [[String: Any]] {
        try await vault.read(records, of: tenant, scope: scope, events: events).map {
            guard let item = try JSONSerialization.jsonObject(with: Data($0)) as? [String: Any] else { throw GatewayError.internalError }
            return item
        }
    }

    /// The records of `items` appended after the conversation's last item, each with an id
    /// (its own, or a new one) and in the shape a conversation lists.
    func itemRecords(_ items: [Any], of id: String, after last: Int, sealer: RecordSealer, at time: Int64) throws -> (records: [Record], items: [[String: Any]]) {
        var records: [Record] = []
        var added: [[String: Any]] = []
        for (i, value) in items.enumerated() {
            let item = ResponseItems.conversationItem(value)
            let itemID = item["id"] as? String ?? ""
            records.append(try sealer.seal(Array(try JSONSerialization.data(withJSONObject: item)), id: id,
                                           kind: Self.itemKind(last + 1 + i, itemID), createdAt: time, metadata: RecordMetadata()))
            added.append(item)
        }
        return (records, added)
    }

    /// The conversation object's record.
    func objectRecord(id: String, createdAt: Int64, metadata: Any, sealer: RecordSealer) throws -> (Record, [String: Any]) {
        let object: [String: Any] = ["id": id, "object": "conversation", "created_at": createdAt / 1000, "metadata": metadata]
        return (try sealer.seal(Array(try JSONSerialization.data(withJSONObject: object)), id: id, kind: Self.kind, createdAt: createdAt,
                                metadata: RecordMetadata()), object)
    }
}
