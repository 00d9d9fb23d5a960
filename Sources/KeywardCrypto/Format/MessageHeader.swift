/// A message header: everything before the body. Format version 2 is written; versions 1 and 2
/// are read.
public struct MessageHeader: Sendable {
    public enum ContentType: UInt8, Sendable { case nonFramed = 1, framed = 2 }

    public var suite: AlgorithmSuite
    /// 16 bytes in version 1, 32 in version 2.
    public var messageID: [UInt8]
    public var encryptionContext: EncryptionContext
    public var encryptedDataKeys: [EncryptedDataKey]
    public var contentType: ContentType
    /// 0 for non-framed content.
    public var frameLength: UInt32
    /// The key commitment (version 2 committing suites), else empty.
    public var commitKey: [UInt8]
    /// The header body as serialized: the authenticated data of the header tag and the start of
    /// the signed bytes. Kept as read so that re-serialization can never disagree with it.
    public internal(set) var bodyBytes: [UInt8] = []
    /// Version 1 only: the IV of the header tag.
    public internal(set) var authIV: [UInt8] = []
    public internal(set) var authTag: [UInt8] = []

    public var version: UInt8 { suite.messageFormatVersion }

    /// The serialized header authentication section (IV in v1, then the tag).
    var authBytes: [UInt8] { authIV + authTag }

    init(suite: AlgorithmSuite, messageID: [UInt8], encryptionContext: EncryptionContext,
         encryptedDataKeys: [EncryptedDataKey], contentType: ContentType, frameLength: UInt32, commitKey: [UInt8]) {
        self.suite = suite
        self.messageID = messageID
        self.encryptionContext = encryptionContext
        self.encryptedDataKeys = encryptedDataKeys
        self.contentType = contentType
        self.frameLength = frameLength
        self.commitKey = commitKey
    }

    /// Serializes a version 2 header body into ``bodyBytes``.
    mutating func serializeBodyV2() throws {
        precondition(suite.messageFormatVersion == 2)
        var out: [UInt8] = [2]
        out.appendUInt16(suite.id)
        out.append(contentsOf: messageID)
        try out.appendLengthPrefixed16(try encryptionContext.serialized(), what: "the encryption context")
        guard !encryptedDataKeys.isEmpty, encryptedDataKeys.count <= Int(UInt16.max) else {
            throw KeywardCryptoError(.invalidArgument, "a message needs 1 to 65,535 encrypted data keys")
        }
        out.appendUInt16(UInt16(encryptedDataKeys.count))
        for edk in encryptedDataKeys {
            try out.appendLengthPrefixed16(edk.providerID, what: "a key provider ID")
            try out.appendLengthPrefixed16(edk.providerInfo, what: "a key provider info")
            try out.appendLengthPrefixed16(edk.ciphertext, what: "an encrypted data key")
        }
        out.append(contentType.rawValue)
        out.appendUInt32(frameLength)
        out.append(contentsOf: commitKey)
        bodyBytes = out
    }

    /// Parses a complete header (body and authentication section) from the start of `bytes`.
    ///
    /// - Returns: the header and how many bytes it took.
    /// - Throws: ``NeedMoreBytes`` if `bytes` ends inside the header, or a ``KeywardCryptoError``.
    static func parse(_ bytes: UnsafeRawBufferPointer, maxEncryptedDataKeys: Int?) throws -> (MessageHeader, Int) {
        var r = ByteReader(bytes)
        let version = try r.readUInt8()
        switch version {
        case 1, 2: break
        case UInt8(ascii: "A"):
            throw KeywardCryptoError(.base64Input, "the input looks like a base64-encoded message; decode it first")
        default:
            throw KeywardCryptoError(.malformedMessage, "not an encrypted message: unknown format version \(version)")
        }
        if version == 1 {
            guard try r.readUInt8() == 0x80 else {
                throw KeywardCryptoError(.malformedMessage, "unknown message type in a version 1 header")
            }
        }
        let suiteID = try r.readUInt16()
        guard let suite = AlgorithmSuite.byID(suiteID), suite.messageFormatVersion == version else {
            throw KeywardCryptoError(.unsupportedAlgorithm, "unknown algorithm suite \(hex4(suiteID)) for format version \(version)")
        }
        let messageID = try r.readBytes(version == 1 ? 16 : 32)
        let contextLength = Int(try r.readUInt16())
        let context = try EncryptionContext(deserializing: try r.readSlice(contextLength))
        let edkCount = Int(try r.readUInt16())
        guard edkCount > 0 else {
            throw KeywardCryptoError(.malformedMessage, "the header has no encrypted data keys")
        }
        if let max = maxEncryptedDataKeys, edkCount > max {
            throw KeywardCryptoError(.tooManyEncryptedDataKeys, "the message has \(edkCount) encrypted data keys, more than the maximum of \(max)")
        }
        var edks: [EncryptedDataKey] = []
        edks.reserveCapacity(edkCount)
        for _ in 0..<edkCount {
            let id = try r.readBytes(Int(try r.readUInt16()))
            let info = try r.readBytes(Int(try r.readUInt16()))
            let ct = try r.readBytes(Int(try r.readUInt16()))
            edks.append(EncryptedDataKey(providerID: id, providerInfo: info, ciphertext: ct))
        }
        guard let contentType = ContentType(rawValue: try r.readUInt8()) else {
            throw KeywardCryptoError(.malformedMessage, "unknown content type")
        }
        if version == 1 {
            guard try r.readUInt32() == 0 else {
                throw KeywardCryptoError(.malformedMessage, "reserved header field is not zero")
            }
            guard Int(try r.readUInt8()) == suite.ivLength else {
                throw KeywardCryptoError(.malformedMessage, "IV length does not match the algorithm suite")
            }
        }
        let frameLength = try r.readUInt32()
        switch contentType {
        case .framed where frameLength == 0:
            throw KeywardCryptoError(.malformedMessage, "framed content with a frame length of 0")
        case .nonFramed where frameLength != 0:
            throw KeywardCryptoError(.malformedMessage, "non-framed content with a frame length")
        default: break
        }
        let commitKey = try r.readBytes(suite.suiteDataLength)
        let bodyEnd = r.offset
        var header = MessageHeader(
            suite: suite, messageID: messageID, encryptionContext: context, encryptedDataKeys: edks,
            contentType: contentType, frameLength: frameLength, commitKey: commitKey)
        header.bodyBytes = Array(UnsafeRawBufferPointer(rebasing: bytes[0..<bodyEnd]))
        if version == 1 { header.authIV = try r.readBytes(suite.ivLength) }
        header.authTag = try r.readBytes(suite.tagLength)
        return (header, r.offset)
    }
}

extension MessageHeader {
    /// Parses the header at the start of a message; returns it and its length in bytes.
    public static func parse(prefixOf bytes: UnsafeRawBufferPointer) throws -> (MessageHeader, Int) {
        do {
            return try parse(bytes, maxEncryptedDataKeys: nil)
        } catch is NeedMoreBytes {
            throw KeywardCryptoError(.truncatedMessage, "the header is incomplete")
        }
    }
}
