/// Encrypts one message as a stream: feed plaintext with ``update(_:)``, end with ``finish()``, and
/// drain ciphertext with ``drain(_:)`` as you go. Memory stays at about one frame whatever the
/// message size; the frame loop allocates nothing.
///
/// Writes format version 2, framed. Whole frames are written as soon as they are complete; the
/// final frame, written by ``finish()``, holds the remainder and is shorter than a frame (empty when
/// the plaintext is a multiple of the frame length). The format would allow a full final frame, but
/// the Python ESDK refuses one, so we never write it; we do read it.
public struct MessageEncryptor {
    /// The default frame length, as in the ESDK.
    public static let defaultFrameLength = 4096

    public let header: MessageHeader
    private let frameLength: Int
    private let cipher: AESGCMContext
    private var signer: MessageSigner?
    private var aad: BodyAAD
    private var sequence: UInt32 = 1
    private let pending: GrowableBuffer
    private let output: GrowableBuffer
    private var finished = false

    /// Starts a message and writes its header to the output.
    ///
    /// - Parameter frameLength: plaintext bytes per frame, 1 … 2³²−1.
    public init(materials: EncryptionMaterials, frameLength: Int = MessageEncryptor.defaultFrameLength) throws {
        let suite = materials.suite
        guard suite.messageFormatVersion == 2 else {
            throw KeywardCryptoError(.unsupportedAlgorithm, "only format version 2 suites are written, not \(suite)")
        }
        guard frameLength > 0, frameLength <= Int(UInt32.max) else {
            throw KeywardCryptoError(.invalidArgument, "frame length must be between 1 and 4,294,967,295")
        }
        guard let dataKey = materials.plaintextDataKey, dataKey.count == suite.keyLength else {
            throw KeywardCryptoError(.invalidArgument, "the materials hold no data key of the suite's length")
        }
        guard suite.isSigned == (materials.signingKey != nil) else {
            throw KeywardCryptoError(.invalidArgument, "a signing key is needed exactly for signed suites")
        }
        var messageID = [UInt8](repeating: 0, count: 32)
        SecretBytes(randomCount: 32).withUnsafeBytes { messageID = Array($0) }

        var header = MessageHeader(
            suite: suite, messageID: messageID, encryptionContext: materials.encryptionContext,
            encryptedDataKeys: materials.encryptedDataKeys, contentType: .framed,
            frameLength: UInt32(frameLength),
            commitKey: KeyDerivation.commitKey(dataKey: dataKey, suite: suite, messageID: messageID))
        try header.serializeBodyV2()
        let contentKey = KeyDerivation.contentKey(dataKey: dataKey, suite: suite, messageID: messageID)
        let cipher = try AESGCMContext(key: contentKey, sealing: true)
        self.cipher = cipher

        // Header tag: GCM over no plaintext, IV zero, the header body as AAD.
        var tag = [UInt8](repeating: 0, count: suite.tagLength)
        let zeroIV = [UInt8](repeating: 0, count: suite.ivLength)
        let body = header.bodyBytes
        try zeroIV.withUnsafeBytes { iv in
            try body.withUnsafeBytes { body in
                try tag.withUnsafeMutableBytes { t in
                    try cipher.seal(iv: iv, aad: body, input: UnsafeRawBufferPointer(start: nil, count: 0),
                                    output: t.baseAddress!, tag: t.baseAddress!)
                }
            }
        }
        header.authTag = tag
        self.header = header
        self.frameLength = frameLength
        self.aad = BodyAAD(messageID: messageID)
        self.pending = GrowableBuffer(capacity: min(frameLength, 1 << 20))
        self.output = GrowableBuffer(capacity: min(frameLength, 1 << 20) * 2 + 1024)
        self.signer = materials.signingKey.map(MessageSigner.init)

        output.append(header.bodyBytes)
        output.append(header.authTag)
        signer?.update(output.bytes)
    }

    /// Encrypts every whole frame of `plaintext`; keeps the remainder (less than a frame) back.
    public mutating func update(_ plaintext: UnsafeRawBufferPointer) throws {
        precondition(!finished, "update after finish")
        var rest = plaintext
        if !pending.isEmpty {
            let take = min(frameLength - pending.count, rest.count)
            pending.append(UnsafeRawBufferPointer(rebasing: rest[0..<take]))
            rest = UnsafeRawBufferPointer(rebasing: rest[take...])
            guard pending.count == frameLength else { return }
            try writeFrame(pending.bytes, final: false)
            pending.clear()
        }
        // Frames come straight from the caller's buffer; only a partial tail is copied.
        while rest.count >= frameLength {
            try writeFrame(UnsafeRawBufferPointer(rebasing: rest[0..<frameLength]), final: false)
            rest = UnsafeRawBufferPointer(rebasing: rest[frameLength...])
        }
        pending.append(rest)
    }

    /// Writes the final frame and, for signed suites, the footer.
    public mutating func finish() throws {
        precondition(!finished, "finish called twice")
        try writeFrame(pending.bytes, final: true)
        pending.clear()
        finished = true
        if let signer {
            let signature = try signer.finalize()
            var footer: [UInt8] = []
            footer.appendUInt16(UInt16(signature.count))
            footer.append(contentsOf: signature)
            output.append(footer)
        }
    }

    /// Hands the ciphertext produced so far to `body`, then forgets it.
    public mutating func drain(_ body: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        guard !output.isEmpty else { return }
        try body(output.bytes)
        output.clear()
    }

    private mutating func writeFrame(_ plaintext: UnsafeRawBufferPointer, final: Bool) throws {
        guard sequence < UInt32.max else {
            throw KeywardCryptoError(.limitExceeded, "a message holds at most 4,294,967,294 frames; use a larger frame length")
        }
        let n = plaintext.count
        let headLength = final ? 24 : 16
        let total = headLength + n + 16
        let p = output.reserveTail(total)
        var q = p
        if final {
            writeUInt32(UInt32.max, to: q)
            q += 4
        }
        writeUInt32(sequence, to: q)
        writeFrameIV(sequence, to: q + 4)
        let iv = UnsafeRawBufferPointer(start: q + 4, count: 12)
        q += 16
        if final {
            writeUInt32(UInt32(n), to: q)
            q += 4
        }
        let cipher = self.cipher
        try aad.with(final ? .finalFrame : .frame, sequence: sequence, length: UInt64(n)) { a in
            try cipher.seal(iv: iv, aad: a, input: plaintext, output: q, tag: q + n)
        }
        signer?.update(UnsafeRawBufferPointer(start: p, count: total))
        output.commit(total)
        sequence += 1
    }
}
