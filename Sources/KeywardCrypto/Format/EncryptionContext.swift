/// Non-secret key–value pairs bound to a message as authenticated data.
///
/// Keys and values are compared as UTF-8 bytes, never by Unicode equivalence: two spellings of "é"
/// are different keys, as they are for every other ESDK. Pairs are kept sorted by key bytes, which is
/// the serialization order the format requires.
public struct EncryptionContext: Hashable, Sendable, Sequence, ExpressibleByDictionaryLiteral {
    /// One pair, stored as its UTF-8 bytes.
    public struct Pair: Hashable, Sendable {
        public let key: [UInt8]
        public let value: [UInt8]
        public var keyString: String { String(decoding: key, as: UTF8.self) }
        public var valueString: String { String(decoding: value, as: UTF8.self) }
    }

    /// The prefix reserved for the format's own entries.
    public static let reservedPrefix = Array("aws-crypto-".utf8)
    /// The key under which signed suites carry the verification key.
    public static let publicKeyKey = Array("aws-crypto-public-key".utf8)

    public private(set) var pairs: [Pair] = []

    public init() {}

    public init(dictionaryLiteral elements: (String, String)...) {
        for (k, v) in elements { self[k] = v }
    }

    public init(_ dictionary: [String: String]) {
        for (k, v) in dictionary { self[k] = v }
    }

    public var isEmpty: Bool { pairs.isEmpty }
    public var count: Int { pairs.count }
    public func makeIterator() -> IndexingIterator<[Pair]> { pairs.makeIterator() }

    public subscript(key: String) -> String? {
        get { value(forKey: Array(key.utf8)).map { String(decoding: $0, as: UTF8.self) } }
        set { setValue(newValue.map { Array($0.utf8) }, forKey: Array(key.utf8)) }
    }

    public func value(forKey key: [UInt8]) -> [UInt8]? {
        let i = insertionIndex(key)
        return i < pairs.count && pairs[i].key == key ? pairs[i].value : nil
    }

    public mutating func setValue(_ value: [UInt8]?, forKey key: [UInt8]) {
        let i = insertionIndex(key)
        let present = i < pairs.count && pairs[i].key == key
        switch (value, present) {
        case (let v?, true): pairs[i] = Pair(key: key, value: v)
        case (let v?, false): pairs.insert(Pair(key: key, value: v), at: i)
        case (nil, true): pairs.remove(at: i)
        case (nil, false): break
        }
    }

    /// Whether any key starts with `aws-crypto-`.
    public var hasReservedKeys: Bool { pairs.contains { $0.key.starts(with: Self.reservedPrefix) } }

    /// Whether every pair of `required` is present here with the same value.
    public func contains(_ required: EncryptionContext) -> Bool {
        required.pairs.allSatisfy { value(forKey: $0.key) == $0.value }
    }

    private func insertionIndex(_ key: [UInt8]) -> Int {
        var lo = 0, hi = pairs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if pairs[mid].key.lexicographicallyPrecedes(key) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The format's serialization: count, then each key and value with 2-byte lengths, sorted by key.
    /// An empty context serializes to no bytes at all.
    public func serialized() throws -> [UInt8] {
        guard !pairs.isEmpty else { return [] }
        guard pairs.count <= Int(UInt16.max) else {
            throw KeywardCryptoError(.invalidEncryptionContext, "encryption context has too many pairs")
        }
        var out: [UInt8] = []
        out.appendUInt16(UInt16(pairs.count))
        for p in pairs {
            try out.appendLengthPrefixed16(p.key, what: "an encryption context key")
            try out.appendLengthPrefixed16(p.value, what: "an encryption context value")
        }
        guard out.count <= Int(UInt16.max) else {
            throw KeywardCryptoError(.invalidEncryptionContext, "serialized encryption context is longer than 65,535 bytes")
        }
        return out
    }

    /// Whether `bytes` are UTF-8; ASCII (ids, names, kinds) without building a String.
    private static func isUTF8(_ bytes: [UInt8]) -> Bool {
        bytes.allSatisfy { $0 < 0x80 } || String(validating: bytes, as: UTF8.self) != nil
    }

    /// Parses a serialized context, refusing duplicates, unsorted keys are accepted (the spec asks
    /// readers to be lenient about order) but invalid UTF-8 is not.
    init(deserializing bytes: UnsafeRawBufferPointer) throws {
        guard !bytes.isEmpty else { return }
        var r = ByteReader(bytes)
        do {
            let n = Int(try r.readUInt16())
            guard n > 0 else {
                throw KeywardCryptoError(.malformedMessage, "encryption context declares zero pairs")
            }
            for _ in 0..<n {
                let k = try r.readBytes(Int(try r.readUInt16()))
                let v = try r.readBytes(Int(try r.readUInt16()))
                guard Self.isUTF8(k), Self.isUTF8(v) else {
                    throw KeywardCryptoError(.malformedMessage, "encryption context is not valid UTF-8")
                }
                guard value(forKey: k) == nil else {
                    throw KeywardCryptoError(.malformedMessage, "encryption context has a duplicate key")
                }
                setValue(v, forKey: k)
            }
        } catch is NeedMoreBytes {
            throw KeywardCryptoError(.malformedMessage, "encryption context is shorter than its lengths say")
        }
        guard r.remaining == 0 else {
            throw KeywardCryptoError(.malformedMessage, "encryption context has bytes after its last pair")
        }
    }
}
