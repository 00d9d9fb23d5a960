import Foundation
import KeywardJSON

/// One encrypted record: an ESDK message split into its header and body, with the only metadata
/// kept in the clear.
public struct Record: Sendable, Hashable {
    public var tenant: String
    /// Shared by the records of one exchange (its request and its response).
    public var id: String
    /// What the record holds, e.g. `chat.request`, `chat.response`; part of the encryption context.
    public var kind: String
    public var createdAt: Int64
    /// When the purge service may delete it; nil keeps it.
    public var expiresAt: Int64?
    public var metadata: RecordMetadata
    /// The message header: the encrypted data keys and the encryption context.
    public var header: [UInt8]
    /// The message body: frames, and the footer if signed.
    public var body: [UInt8]

    public init(tenant: String, id: String, kind: String, createdAt: Int64, expiresAt: Int64?,
                metadata: RecordMetadata, header: [UInt8], body: [UInt8]) {
        self.tenant = tenant
        self.id = id
        self.kind = kind
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.metadata = metadata
        self.header = header
        self.body = body
    }

    /// Whether it is past its expiry at `now` (milliseconds): served as if the purge, which runs
    /// hourly, had already deleted it.
    public func isExpired(at now: Int64) -> Bool { Self.isExpired(expiresAt, at: now) }

    /// The same test for an expiry read without its record (a ``RecordHeader``'s).
    public static func isExpired(_ expiresAt: Int64?, at now: Int64) -> Bool {
        expiresAt.map { $0 <= now } ?? false
    }
}

/// The non-sensitive facts about a record, stored in the clear so records can be listed, counted
/// and purged without a key.
public struct RecordMetadata: Sendable, Hashable, Codable {
    public var model: String?
    public var status: Int?
    public var promptTokens: Int?
    public var completionTokens: Int?
    /// Time the upstream took, in milliseconds.
    public var upstreamMs: Double?
    /// Plaintext size in bytes.
    public var size: Int?
    public var streamed: Bool?
    /// The ids of the earlier records this one continues, oldest first (a Responses turn's
    /// `previous_response_id` chain), so that a whole chain is read in one query.
    public var chain: [String]?
    /// A file's purpose (`batch`, `fine-tune`, …), by which files are listed.
    public var purpose: String?

    public init(model: String? = nil, status: Int? = nil, promptTokens: Int? = nil, completionTokens: Int? = nil,
                upstreamMs: Double? = nil, size: Int? = nil, streamed: Bool? = nil, chain: [String]? = nil, purpose: String? = nil) {
        self.chain = chain
        self.purpose = purpose
        self.model = model
        self.status = status
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.upstreamMs = upstreamMs
        self.size = size
        self.streamed = streamed
    }
}

/// Which page of records to list.
public struct RecordQuery: Sendable, Hashable {
    public enum Order: String, Sendable { case ascending = "asc", descending = "desc" }
    public var tenant: String
    public var kind: String
    /// Only records created after (in `order`) the record with this id.
    public var after: String?
    public var limit: Int
    public var order: Order
    /// Only records with this label: a completion's model, a file's purpose (``RecordMetadata/label``).
    public var label: String?
    /// Only records that have not expired by this time (ms): the purge deletes the others later.
    public var liveAt: Int64?

    /// The most records one query returns, whatever its `limit`.
    public static let maxLimit = 1000

    public init(tenant: String, kind: String, after: String? = nil, limit: Int = 20, order: Order = .ascending, label: String? = nil,
                liveAt: Int64? = nil) {
        self.tenant = tenant
        self.kind = kind
        self.after = after
        self.limit = limit
        self.order = order
        self.label = label
        self.liveAt = liveAt
    }
}

/// A record's header and where it is, for jobs that rewrite headers only.
public struct RecordHeader: Sendable, Hashable {
    public var id: String
    public var kind: String
    public var header: [UInt8]
    /// As ``Record/expiresAt``.
    public var expiresAt: Int64?

    public init(id: String, kind: String, header: [UInt8], expiresAt: Int64? = nil) {
        self.id = id
        self.kind = kind
        self.header = header
        self.expiresAt = expiresAt
    }
}

/// A header to replace, only if it is still `old` (a record deleted or rewritten meanwhile is left alone).
public struct HeaderChange: Sendable, Hashable {
    public var id: String
    public var kind: String
    public var old: [UInt8]
    public var new: [UInt8]

    public init(id: String, kind: String, old: [UInt8], new: [UInt8]) {
        self.id = id
        self.kind = kind
        self.old = old
        self.new = new
    }
}

extension RecordMetadata {
    /// The metadata as a JSON object, written by hand into bytes made a string once: JSONEncoder
    /// costs more than the insert, and appending to a `String` piece by piece cost 2.5 µs a record.
    public var json: String {
        var out: [UInt8] = [UInt8(ascii: "{")]
        out.reserveCapacity(160)
        func key(_ k: StaticString) {
            if out.count > 1 { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: "\""))
            k.withUTF8Buffer { out.append(contentsOf: $0) }
            out.append(contentsOf: "\":".utf8)
        }
        func number(_ n: some BinaryInteger) { out.append(contentsOf: String(n).utf8) }
        if let model { key("model"); JSONString.append(quoted: model, to: &out) }
        if let status { key("status"); number(status) }
        if let promptTokens { key("promptTokens"); number(promptTokens) }
        if let completionTokens { key("completionTokens"); number(completionTokens) }
        if let upstreamMs { key("upstreamMs"); out.append(contentsOf: (upstreamMs.isFinite ? upstreamMs.description : "0").utf8) }
        if let size { key("size"); number(size) }
        if let streamed { key("streamed"); out.append(contentsOf: (streamed ? "true" : "false").utf8) }
        if let chain {
            key("chain")
            out.append(UInt8(ascii: "["))
            for (i, id) in chain.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONString.append(quoted: id, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        }
        if let purpose { key("purpose"); JSONString.append(quoted: purpose, to: &out) }
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }

    /// What lists of records filter on, kept in an indexed column of its own: a completion's
    /// model, or a file's purpose.
    public var label: String? { model ?? purpose }
}
