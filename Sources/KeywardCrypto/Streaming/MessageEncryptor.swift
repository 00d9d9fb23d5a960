import CKeywardOpenSSL

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
    /// Unsigned messages up to this size are sealed in one call when their plaintext is at hand.
    public static let oneShotLimit = 1 << 20

    public let header: MessageHeader
    private let frameLength: Int
    private let contentKey: SecretBytes
    /// One per worker, made when a batch first needs it; `ciphers[0]` seals the header.
    private var ciphers: [FrameCipher]
    private var signer: MessageSigner?
    private var sequence: UInt32 = 1
    private let pending: GrowableBuffer
    private var output: GrowableBuffer
    private var finished = false

    /// Starts a message and writes its header to the output.
    ///
    /// - Parameter frameLength: plaintext bytes per frame, 1 … 2³²−1.
    public init(materials: EncryptionMaterials, frameLength: Int = MessageEncryptor.defaultFrameLength) throws {
        let (header, contentKey, cipher) = try Self.begin(materials, frameLength: frameLength)
        self.contentKey = contentKey
        self.ciphers = [cipher]
        self.header = header
        self.frameLength = frameLength
        self.pending = GrowableBuffer(capacity: min(frameLength, 1 << 20), holdsSecrets: true)
        self.output = GrowableBuffer(capacity: min(frameLength, 1 << 20) * 2 + 1024, holdsSecrets: false)
        self.signer = materials.signingKey.map(MessageSigner.init)

        output.append(header.bodyBytes)
        output.append(header.authTag)
        signer?.update(output.bytes)
    }

    /// Encrypts a whole unsigned message held in memory in one call, returning its header and its
    /// body apart, as a record store keeps them: the same bytes as the streaming encryptor writes,
    /// without its buffers (one header serialization, one AES key schedule, two allocations).
    public static func seal(_ plaintext: UnsafeRawBufferPointer, materials: EncryptionMaterials,
                            frameLength: Int = MessageEncryptor.defaultFrameLength) throws -> (header: [UInt8], body: [UInt8]) {
        guard !materials.suite.isSigned else {
            throw KeywardCryptoError(.unsupportedAlgorithm, "one-shot sealing writes unsigned suites only, not \(materials.suite)")
        }
        let whole = plaintext.count / frameLength, rest = plaintext.count - whole * frameLength
        guard whole < Int(UInt32.max) - 1 else {
            throw KeywardCryptoError(.limitExceeded, "a message holds at most 4,294,967,294 frames; use a larger frame length")
        }
        let (header, _, cipher) = try begin(materials, frameLength: frameLength)
        let headerBytes = header.bodyBytes + header.authTag
        // Regular frames: sequence, IV, content, tag; the final one adds its marker and length.
        let per = 16 + frameLength + 16
        let size = whole * per + 4 + 16 + 4 + rest + 16
        let body = try [UInt8](unsafeUninitializedCapacity: size) { b, n in
            let out = UnsafeMutableRawPointer(b.baseAddress!)
            var at = 0
            for j in 0..<whole {
                let frame = UnsafeRawBufferPointer(rebasing: plaintext[(j * frameLength)..<((j + 1) * frameLength)])
                at += try cipher.seal(frame, sequence: UInt32(j + 1), final: false, to: out + at)
            }
            at += try cipher.seal(UnsafeRawBufferPointer(rebasing: plaintext[(whole * frameLength)...]), sequence: UInt32(whole + 1),
                                  final: true, to: out + at)
            precondition(at == size)
            n = size
        }
        return (headerBytes, body)
    }

    /// A new message's header (serialized and tagged), its content key and a cipher keyed with it.
    private static func begin(_ materials: EncryptionMaterials, frameLength: Int) throws -> (MessageHeader, SecretBytes, FrameCipher) {
        let (suite, dataKey) = try check(materials, frameLength: frameLength)
        let messageID = [UInt8](unsafeUninitializedCapacity: 32) { b, n in
            guard kw_random(b.baseAddress!, 32) == 1 else { fatalError("the system CSPRNG failed") }
            n = 32
        }
        let (contentKey, commitKey) = KeyDerivation.committingKeys(dataKey: dataKey, suite: suite, messageID: messageID)
        var header = MessageHeader(
            suite: suite, messageID: messageID, encryptionContext: materials.encryptionContext,
            encryptedDataKeys: materials.encryptedDataKeys, contentType: .framed,
            frameLength: UInt32(frameLength), commitKey: commitKey)
        try header.serializeBodyV2()
        let cipher = try FrameCipher(key: contentKey, sealing: true, messageID: messageID)
        let body = header.bodyBytes
        header.authTag = try [UInt8](unsafeUninitializedCapacity: suite.tagLength) { b, n in
            try cipher.headerTag(body, into: b.baseAddress!)
            n = suite.tagLength
        }
        return (header, contentKey, cipher)
    }

    /// The suite and data key of materials a message can be written with, or why not.
    private static func check(_ materials: EncryptionMaterials, frameLength: Int) throws -> (AlgorithmSuite, SecretBytes) {
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
        return (suite, dataKey)
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
        let whole = rest.count / frameLength
        if whole > 0 {
            try writeFramesInParallel(count: whole, from: .memory(UnsafeRawBufferPointer(rebasing: rest[0..<whole * frameLength])))
            rest = UnsafeRawBufferPointer(rebasing: rest[(whole * frameLength)...])
        }
        pending.append(rest)
    }

    /// Encrypts every whole frame left in `source`, about 1 MiB of frames per batch, draining the
    /// ciphertext after each batch; the remainder (less than a frame) stays in `source` for
    /// ``update(_:)``. Each worker reads its frames' plaintext into their places in the output and
    /// seals them there. Call it before any ``update(_:)``, or when these have fed whole frames.
    ///
    /// A signed message's hash must see every byte in order, at a fifth of sealing's speed: the
    /// calling thread hashes the batch before while the others seal the next, so SHA-384 never waits for
    /// the sealing (it did when it ran after each batch: 77–80 % of `openssl speed sha384`).
    public mutating func update(readingFrom source: some PositionalByteSource,
                                drain: (UnsafeRawBufferPointer) throws -> Void) throws {
        precondition(!finished && pending.isEmpty, "reading whole frames needs a frame boundary")
        let batch = max(1, FrameParallelism.batchBytes / (signer == nil ? 1 : 2) / frameLength)
        guard let signer, FrameParallelism.workers > 1 else {
            while source.remaining >= frameLength {
                let count = min(batch, source.remaining / frameLength)
                try writeFramesInParallel(count: count, from: .source(source))
                source.consume(count * frameLength)
                try self.drain(drain)
            }
            return
        }
        try self.drain(drain)  // the header, hashed already
        // Sealed, not yet hashed nor drained: the batch before the one being sealed.
        var previous = GrowableBuffer(capacity: output.capacity, holdsSecrets: false)
        while source.remaining >= frameLength {
            let count = min(batch, source.remaining / frameLength)
            try writeFramesInParallel(count: count, from: .source(source), hashingBeside: previous.bytes)
            source.consume(count * frameLength)
            if !previous.isEmpty { try drain(previous.bytes) }
            previous.clear()
            swap(&output, &previous)
        }
        signer.update(previous.bytes)
        if !previous.isEmpty { try drain(previous.bytes) }
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
        let p = output.reserveTail(24 + plaintext.count + 16)
        let n = try ciphers[0].seal(plaintext, sequence: sequence, final: final, to: p)
        signer?.update(UnsafeRawBufferPointer(start: p, count: n))
        output.commit(n)
        sequence += 1
    }

    /// Where a batch's plaintext is: in memory, or still in a positional source, from which each
    /// worker reads its own frames into their places in the output and seals them in place.
    private enum BatchInput {
        case memory(UnsafeRawBufferPointer)
        case source(any PositionalByteSource)
    }

    /// Seals `count` regular frames, each into its known place in the output: on several threads
    /// when the batch is large enough for that to pay. With `previous` (signed messages), the
    /// calling thread first hashes those bytes, the batch before, and this batch is left unhashed.
    private mutating func writeFramesInParallel(count: Int, from input: BatchInput,
                                                hashingBeside previous: UnsafeRawBufferPointer? = nil) throws {
        guard UInt64(sequence) + UInt64(count) < UInt64(UInt32.max) else {
            throw KeywardCryptoError(.limitExceeded, "a message holds at most 4,294,967,294 frames; use a larger frame length")
        }
        let split = count >= 2 && count * frameLength >= FrameParallelism.minimumBatchBytes
        let parts = split || previous != nil ? min(FrameParallelism.workers, max(count, 2)) : 1
        while ciphers.count < parts {
            ciphers.append(try FrameCipher(key: contentKey, sealing: true, messageID: header.messageID))
        }
        let frameLength = self.frameLength, per = 16 + frameLength + 16, first = sequence
        let out = output.reserveTail(count * per)
        let ciphers = self.ciphers, signer = self.signer
        let errors = UnsafeMutableBufferPointer<(any Error)?>.allocate(capacity: parts)
        errors.initialize(repeating: nil)
        defer { errors.deinitialize().deallocate() }
        let runs = FrameRuns(count: count, frameLength: frameLength)
        FrameParallelism.run(parts) { i in
            // A frame's content goes 16 bytes in: after its sequence number and IV.
            func content(_ j: Int) -> UnsafeMutableRawBufferPointer {
                UnsafeMutableRawBufferPointer(start: out + j * per + 16, count: frameLength)
            }
            // The calling thread (part 0, under way at once while the others wake up) hashes the
            // batch before, then seals whatever runs are left.
            if i == 0, let previous { signer?.update(previous) }
            do {
                while let run = runs.take() {
                    try seal(run)
                }
            } catch {
                errors[i] = error
            }
            func seal(_ run: Range<Int>) throws {
                if case .source(let source) = input {
                    let slots = run.map(content)
                    try slots.withUnsafeBufferPointer { try source.read(at: run.lowerBound * frameLength, into: $0) }
                }
                for j in run {
                    let frame: UnsafeRawBufferPointer
                    switch input {
                    case .memory(let plaintext): frame = UnsafeRawBufferPointer(rebasing: plaintext[(j * frameLength)..<((j + 1) * frameLength)])
                    case .source: frame = UnsafeRawBufferPointer(content(j))  // sealed in place
                    }
                    _ = try ciphers[i].seal(frame, sequence: first + UInt32(j), final: false, to: out + j * per)
                }
            }
        }
        if let error = errors.lazy.compactMap({ $0 }).first {
            // Plaintext read into the output may be left unsealed: wipe it; nothing was committed.
            kw_cleanse(out, count * per)
            throw error
        }
        if previous == nil { signer?.update(UnsafeRawBufferPointer(start: out, count: count * per)) }
        output.commit(count * per)
        sequence += UInt32(count)
    }
}
