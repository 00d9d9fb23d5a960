/// Options for reading messages.
public struct DecryptionOptions: Sendable {
    public var commitmentPolicy: CommitmentPolicy
    /// Pairs that must be present, with these values, in the message's encryption context.
    public var requiredContext: EncryptionContext
    /// Refuse messages with more encrypted data keys than this (nil: no limit).
    public var maxEncryptedDataKeys: Int?
    /// Non-framed content must be held whole until its tag verifies; this bounds that memory.
    public var maxNonFramedContentLength: Int

    public init(commitmentPolicy: CommitmentPolicy = .requireEncryptRequireDecrypt,
                requiredContext: EncryptionContext = [:], maxEncryptedDataKeys: Int? = nil,
                maxNonFramedContentLength: Int = 256 << 20) {
        self.commitmentPolicy = commitmentPolicy
        self.requiredContext = requiredContext
        self.maxEncryptedDataKeys = maxEncryptedDataKeys
        self.maxNonFramedContentLength = maxNonFramedContentLength
    }
}

/// Decrypts one message as a stream. Feed ciphertext with ``update(_:)``; once the header is read,
/// ``materialsRequest`` is set and the caller obtains materials (an async key-store call) and passes
/// them to ``begin(with:)``; then keep feeding, call ``finish()`` at the end of input, and drain
/// plaintext with ``drain(_:)``.
///
/// Only authenticated plaintext is ever drained. For signed suites the final frame is withheld
/// until the signature verifies. A caller that fails must discard what it drained before (the CLI
/// writes to a temporary file that it renames only on success).
public struct MessageDecryptor {
    private enum State {
        case header
        case awaitingMaterials
        case frames
        case nonFramed
        case footer
        case done
    }

    private let options: DecryptionOptions
    private var state = State.header
    /// The parsed header, once read.
    public private(set) var header: MessageHeader?
    /// Set when the header has been read and materials are needed.
    public private(set) var materialsRequest: DecryptionMaterialsRequest?

    private var contentKey: SecretBytes?
    /// One per worker; `ciphers[0]` opens frames one at a time.
    private var ciphers: [FrameCipher] = []
    private var verifier: MessageVerifier?
    private var expectedSequence: UInt32 = 1
    private var frameLength = 0
    private let carry = GrowableBuffer(capacity: 4096, holdsSecrets: false)
    /// Bytes `carry` must hold before parsing again; nil while the needed amount is unknown.
    private var carryNeeded: Int?
    /// Starts small (a stored record is a few hundred bytes, and a 64 KiB buffer per record cost
    /// more to allocate than to fill); a stream's first frames grow it once to their length.
    private let output = GrowableBuffer(capacity: 4096, holdsSecrets: true)
    private let withheld = GrowableBuffer(capacity: 16, holdsSecrets: true)
    private var sawAnyInput = false

    public init(options: DecryptionOptions = DecryptionOptions()) {
        self.options = options
    }

    /// Whether a complete, verified message has been read.
    public var isComplete: Bool { if case .done = state { true } else { false } }

    /// Consumes ciphertext. Throws on the first malformed, unauthenticated or superfluous byte.
    public mutating func update(_ ciphertext: UnsafeRawBufferPointer) throws {
        if !ciphertext.isEmpty { sawAnyInput = true }
        var rest = ciphertext
        while !rest.isEmpty {
            if case .awaitingMaterials = state {
                carry.append(rest)
                return
            }
            if carry.isEmpty {
                let (consumed, needed) = try process(rest)
                // Whatever is left is an incomplete unit, or waits for materials.
                carry.append(UnsafeRawBufferPointer(rebasing: rest[consumed...]))
                carryNeeded = needed
                return
            } else {
                // Top the carried partial unit up to what it needs, no more, then go back to
                // working straight from the caller's buffer.
                let want = carryNeeded.map { max($0 - carry.count, 1) } ?? rest.count
                let take = min(want, rest.count)
                carry.append(UnsafeRawBufferPointer(rebasing: rest[0..<take]))
                rest = UnsafeRawBufferPointer(rebasing: rest[take...])
                if carryNeeded.map({ carry.count >= $0 }) ?? true {
                    try processCarry()
                }
            }
        }
    }

    /// Verifies the header with the materials the key store returned, then continues with any
    /// ciphertext already received.
    public mutating func begin(with materials: DecryptionMaterials) throws {
        guard case .awaitingMaterials = state, let header else {
            preconditionFailure("begin(with:) before the header was read")
        }
        guard let dataKey = materials.plaintextDataKey, dataKey.count == header.suite.keyLength else {
            throw KeywardCryptoError(.noDecryptableKey, "no data key could be decrypted")
        }
        let suite = header.suite
        let contentKey: SecretBytes
        if suite.isCommitting {
            let (content, commit) = KeyDerivation.committingKeys(dataKey: dataKey, suite: suite, messageID: header.messageID)
            let ok = commit.withUnsafeBytes { a in header.commitKey.withUnsafeBytes { b in constantTimeEqual(a, b) } }
            guard ok else {
                throw KeywardCryptoError(.commitmentMismatch, "the data key does not match the message's key commitment")
            }
            contentKey = content
        } else {
            contentKey = KeyDerivation.contentKey(dataKey: dataKey, suite: suite, messageID: header.messageID)
        }
        let cipher = try AESGCMContext(key: contentKey, sealing: false)
        let iv = suite.messageFormatVersion == 1 ? header.authIV : [UInt8](repeating: 0, count: suite.ivLength)
        let authentic = try iv.withUnsafeBytes { ivp in
            try header.bodyBytes.withUnsafeBytes { body in
                try header.authTag.withUnsafeBytes { tag in
                    var scratch: UInt8 = 0
                    return try cipher.open(iv: ivp, aad: body, input: UnsafeRawBufferPointer(start: nil, count: 0),
                                           output: &scratch, tag: tag)
                }
            }
        }
        guard authentic else {
            throw KeywardCryptoError(.authenticationFailed, "the message header does not authenticate: it was altered, or the key is wrong")
        }
        if suite.isSigned {
            guard let key = materials.verificationKey else {
                throw KeywardCryptoError(.malformedMessage, "no verification key for a signed message")
            }
            let v = MessageVerifier(key)
            header.bodyBytes.withUnsafeBytes { v.update($0) }
            header.authBytes.withUnsafeBytes { v.update($0) }
            verifier = v
        }
        self.contentKey = contentKey
        ciphers = [FrameCipher(cipher: cipher, messageID: header.messageID)]
        frameLength = Int(header.frameLength)
        materialsRequest = nil
        state = header.contentType == .framed ? .frames : .nonFramed
        carryNeeded = nil
        if !carry.isEmpty { try processCarry() }
    }

    /// Opens whole regular frames straight from `source`, about 1 MiB of frames per batch, each
    /// worker reading and opening its own frames; `drain` gets each batch's plaintext. It stops,
    /// reading nothing more, where it cannot take a whole batch: the end near (the final frame), or
    /// a batch with a frame out of order or not authentic. ``update(_:)`` then goes on from where
    /// this stopped, and reports any fault as it would have anyway.
    ///
    /// A signed message's hash must see every byte in order, at a fifth of AES-GCM's speed: the
    /// calling thread hashes the batch before while the others read and open the next, and the
    /// last batch is hashed before this returns. Only the final frame's plaintext waits for the signature.
    public mutating func update(readingFrom source: some PositionalByteSource,
                                drain: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard case .frames = state, frameLength > 0, FrameParallelism.workers > 1,
              let key = contentKey, let header else { return }
        // A frame split by the last chunk: read what it lacks, so that source and decryptor agree.
        while case .frames = state, !carry.isEmpty {
            let wanted = (carryNeeded ?? 16 + frameLength + 16) - carry.count
            guard wanted > 0, wanted <= source.remaining else { return }
            let piece = UnsafeMutableRawBufferPointer.allocate(byteCount: wanted, alignment: 16)
            defer { piece.deallocate() }
            try [piece].withUnsafeBufferPointer { try source.read(at: 0, into: $0) }
            source.consume(wanted)
            try update(UnsafeRawBufferPointer(piece))
        }
        let per = 16 + frameLength + 16
        let verifier = self.verifier
        // Signed: half batches, since the one before is kept beside (peak memory as unsigned).
        let batch = max(1, FrameParallelism.batchBytes / (verifier == nil ? 1 : 2) / frameLength)
        // Read, opened and drained, not yet hashed: the batch before (in `hashing`).
        var previous: UnsafeRawBufferPointer?
        defer { if let previous { verifier?.update(previous) } }
        while case .frames = state, carry.isEmpty {
            // Leave at least a minimal final frame (24 + 16 bytes) to the frame-by-frame path.
            let count = min(batch, max(0, source.remaining - 40) / per)
            guard count >= 2, count * frameLength >= FrameParallelism.minimumBatchBytes,
                  UInt64(expectedSequence) + UInt64(count) < UInt64(UInt32.max - 2) else { return }
            let parts = min(FrameParallelism.workers, count)
            while ciphers.count < parts {
                ciphers.append(try FrameCipher(key: key, sealing: false, messageID: header.messageID))
            }
            if input.capacity < count * per { input = GrowableBuffer(capacity: count * per, holdsSecrets: false) }
            let hashNow = previous
            previous = nil
            let frameLength = self.frameLength, first = expectedSequence, ciphers = self.ciphers
            let ciphertext = input.reserveTail(count * per)
            let out = output.reserveTail(count * frameLength)
            let failed = UnsafeMutableBufferPointer<Bool>.allocate(capacity: parts)
            failed.initialize(repeating: false)
            defer { failed.deallocate() }
            let runs = FrameRuns(count: count, frameLength: frameLength)
            FrameParallelism.run(parts) { i in
                // The calling thread (part 0, under way at once while the others wake up) hashes
                // the batch before, then takes whatever runs are left.
                if i == 0, let hashNow { verifier?.update(hashNow) }
                while let run = runs.take() {
                    let mine = UnsafeMutableRawBufferPointer(start: ciphertext + run.lowerBound * per, count: run.count * per)
                    guard (try? [mine].withUnsafeBufferPointer({ try source.read(at: run.lowerBound * per, into: $0) })) != nil,
                          ciphers[i].openFrames(run, at: ciphertext, frameLength: frameLength, first: first, to: out) == nil else {
                        failed[i] = true
                        return
                    }
                }
            }
            // Nothing of a failed batch is committed or consumed: the frame-by-frame path reads it
            // again and names the fault.
            guard !failed.contains(true) else { return }
            output.commit(count * frameLength)
            expectedSequence += UInt32(count)
            source.consume(count * per)
            if verifier != nil {
                swap(&input, &hashing)
                previous = UnsafeRawBufferPointer(start: ciphertext, count: count * per)
            }
            try self.drain(drain)
        }
    }

    /// Ciphertext read by ``update(readingFrom:drain:)``'s workers, and (signed messages) the
    /// batch before, kept to be hashed beside the next.
    private var input = GrowableBuffer(capacity: 16, holdsSecrets: false)
    private var hashing = GrowableBuffer(capacity: 16, holdsSecrets: false)

    /// Ends the input: fails unless a complete message was read.
    public mutating func finish() throws {
        switch state {
        case .done: return
        case .header where !sawAnyInput:
            throw KeywardCryptoError(.truncatedMessage, "the input is empty")
        default:
            throw KeywardCryptoError(.truncatedMessage, "the message ends before it is complete")
        }
    }

    /// Hands the authenticated plaintext produced so far to `body`, then forgets it.
    public mutating func drain(_ body: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        guard !output.isEmpty else { return }
        try body(output.bytes)
        output.clear()
    }

    private mutating func processCarry() throws {
        let (consumed, needed) = try process(carry.bytes)
        carry.removeFirst(consumed)
        carryNeeded = needed
    }

    /// Processes whole units from the start of `bytes`.
    /// - Returns: bytes consumed, and how many bytes (from the first unconsumed one) the next unit
    ///   needs, or nil when that is unknown or nothing is needed.
    private mutating func process(_ bytes: UnsafeRawBufferPointer) throws -> (Int, Int?) {
        var offset = 0
        while true {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            let step: Step
            switch state {
            case .header: step = try readHeader(rest)
            case .awaitingMaterials: return (offset, nil)
            case .frames: step = try readFramesInParallel(rest) ?? readFrame(rest)
            case .nonFramed: step = try readNonFramed(rest)
            case .footer: step = try readFooter(rest)
            case .done:
                guard rest.isEmpty else {
                    throw KeywardCryptoError(.trailingBytes, "bytes follow the end of the message")
                }
                return (offset, nil)
            }
            switch step {
            case .consumed(let n): offset += n
            case .need(let n): return (offset, n)
            }
            if offset == bytes.count { return (offset, nil) }
        }
    }

    private enum Step { case consumed(Int), need(Int?) }

    private mutating func readHeader(_ bytes: UnsafeRawBufferPointer) throws -> Step {
        let parsed: (MessageHeader, Int)
        do {
            parsed = try MessageHeader.parse(bytes, maxEncryptedDataKeys: options.maxEncryptedDataKeys)
        } catch is NeedMoreBytes {
            return .need(nil)
        }
        let (header, length) = parsed
        // Checks that need no key come first, so a refused message never reaches the key store.
        try options.commitmentPolicy.checkDecrypt(header.suite)
        guard header.encryptionContext.contains(options.requiredContext) else {
            throw KeywardCryptoError(.encryptionContextMismatch, "the message's encryption context lacks a required pair")
        }
        self.header = header
        materialsRequest = DecryptionMaterialsRequest(
            suite: header.suite, encryptedDataKeys: header.encryptedDataKeys,
            encryptionContext: header.encryptionContext, commitmentPolicy: options.commitmentPolicy)
        state = .awaitingMaterials
        return .consumed(length)
    }

    private mutating func readFrame(_ bytes: UnsafeRawBufferPointer) throws -> Step {
        guard bytes.count >= 4 else { return .need(4) }
        var r = ByteReader(bytes)
        let first = try r.readUInt32()
        let final = first == UInt32.max
        let contentLength: Int
        if final {
            guard bytes.count >= 24 else { return .need(24) }
            _ = try r.readUInt32()
            _ = try r.readSlice(12)
            contentLength = Int(try r.readUInt32())
            guard contentLength <= frameLength else {
                throw KeywardCryptoError(.malformedMessage, "the final frame is longer than the frame length")
            }
        } else {
            contentLength = frameLength
        }
        let total = (final ? 24 : 16) + contentLength + 16
        guard bytes.count >= total else { return .need(total) }
        r = ByteReader(bytes)
        if final { _ = try r.readUInt32() }
        let sequence = try r.readUInt32()
        guard sequence == expectedSequence else {
            throw KeywardCryptoError(.malformedMessage, "frames are out of order: expected \(expectedSequence), found \(sequence)")
        }
        let iv = try r.readSlice(12)
        if final { _ = try r.readUInt32() }
        let content = try r.readSlice(contentLength)
        let tag = try r.readSlice(16)

        let sink = final && verifier != nil ? withheld : output
        let dst = sink.reserveTail(contentLength)
        guard try ciphers[0].open(final ? .finalFrame : .frame, sequence: sequence, iv: iv, content: content, tag: tag, to: dst) else {
            throw KeywardCryptoError(.authenticationFailed, "frame \(sequence) does not authenticate: the message was altered")
        }
        sink.commit(contentLength)
        verifier?.update(UnsafeRawBufferPointer(rebasing: bytes[0..<total]))
        if final {
            state = verifier != nil ? .footer : .done
        } else {
            guard expectedSequence < UInt32.max - 1 else {
                throw KeywardCryptoError(.malformedMessage, "too many frames")
            }
            expectedSequence += 1
        }
        return .consumed(total)
    }

    /// Opens a run of whole, in-order regular frames at the start of `bytes` on several threads;
    /// nil when there are too few for that to pay (or anything unusual, which ``readFrame(_:)``
    /// then handles and reports one frame at a time).
    private mutating func readFramesInParallel(_ bytes: UnsafeRawBufferPointer) throws -> Step? {
        guard FrameParallelism.workers > 1, frameLength * 2 <= bytes.count,
              let key = contentKey, let header else { return nil }
        let per = 16 + frameLength + 16
        var count = 0
        while (count + 1) * per <= bytes.count, expectedSequence + UInt32(count) < UInt32.max - 2 {
            let sequence = UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: count * per, as: UInt32.self))
            guard sequence == expectedSequence + UInt32(count) else { break }
            count += 1
        }
        guard count >= 2, count * frameLength >= FrameParallelism.minimumBatchBytes else { return nil }
        // With a signature to check, the calling thread (part 0, under way at once) hashes the
        // batch while the others open it: SHA-384 runs at a fifth of AES-GCM's speed, so the
        // opening costs next to nothing beside it.
        let verifier = self.verifier
        let openers = verifier == nil ? min(FrameParallelism.workers, count) : max(1, min(FrameParallelism.workers - 1, count))
        let parts = openers + (verifier == nil ? 0 : 1)
        while ciphers.count < openers {
            ciphers.append(try FrameCipher(key: key, sealing: false, messageID: header.messageID))
        }
        let frameLength = self.frameLength, first = expectedSequence, ciphers = self.ciphers
        let out = output.reserveTail(count * frameLength)
        // Per worker: 0 = fine, else 1 + the index of the first frame that failed.
        let failures = UnsafeMutableBufferPointer<Int>.allocate(capacity: parts)
        failures.initialize(repeating: 0)
        defer { failures.deallocate() }
        let runs = FrameRuns(count: count, frameLength: frameLength)
        let hashers = parts - openers
        FrameParallelism.run(parts) { i in
            guard i >= hashers else {
                verifier?.update(UnsafeRawBufferPointer(rebasing: bytes[0..<(count * per)]))
                return
            }
            while failures[i] == 0, let run = runs.take() {
                if let bad = ciphers[i - hashers].openFrames(run, at: bytes.baseAddress!, frameLength: frameLength, first: first, to: out) {
                    failures[i] = bad + 1
                }
            }
        }
        if let bad = failures.filter({ $0 != 0 }).min() {
            // Nothing is committed: the plaintext written so far stays in the buffer's unused tail.
            throw KeywardCryptoError(.authenticationFailed, "frame \(first + UInt32(bad - 1)) does not authenticate: the message was altered")
        }
        output.commit(count * frameLength)
        expectedSequence += UInt32(count)
        return .consumed(count * per)
    }

    private mutating func readNonFramed(_ bytes: UnsafeRawBufferPointer) throws -> Step {
        guard bytes.count >= 20 else { return .need(20) }
        var r = ByteReader(bytes)
        let iv = try r.readSlice(12)
        let length = try r.readUInt64()
        guard length <= (1 << 36) - 32 else {
            throw KeywardCryptoError(.malformedMessage, "non-framed content is longer than the format allows")
        }
        guard length <= UInt64(options.maxNonFramedContentLength) else {
            throw KeywardCryptoError(.limitExceeded, "non-framed content of \(length) bytes exceeds the limit of \(options.maxNonFramedContentLength)")
        }
        let total = 20 + Int(length) + 16
        guard bytes.count >= total else { return .need(total) }
        let content = try r.readSlice(Int(length))
        let tag = try r.readSlice(16)
        let sink = verifier != nil ? withheld : output
        let dst = sink.reserveTail(Int(length))
        guard try ciphers[0].open(.singleBlock, sequence: 1, iv: iv, content: content, tag: tag, to: dst) else {
            throw KeywardCryptoError(.authenticationFailed, "the message body does not authenticate: it was altered")
        }
        sink.commit(Int(length))
        verifier?.update(UnsafeRawBufferPointer(rebasing: bytes[0..<total]))
        state = verifier != nil ? .footer : .done
        return .consumed(total)
    }

    private mutating func readFooter(_ bytes: UnsafeRawBufferPointer) throws -> Step {
        guard bytes.count >= 2 else { return .need(2) }
        var r = ByteReader(bytes)
        let length = Int(try r.readUInt16())
        guard bytes.count >= 2 + length else { return .need(2 + length) }
        let signature = try r.readSlice(length)
        guard let verifier, verifier.verify(signature) else {
            throw KeywardCryptoError(.signatureInvalid, "the message signature does not verify: the message was altered")
        }
        output.append(withheld.bytes)
        withheld.clear()
        state = .done
        return .consumed(2 + length)
    }
}
