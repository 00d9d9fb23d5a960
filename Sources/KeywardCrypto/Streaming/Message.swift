import CKeywardOpenSSL
/// Encrypting and decrypting whole messages, in memory or between streams: the entry points the CLI
/// and the gateway use. Each call obtains materials from a materials manager first (the only
/// `await`), then runs the frame loop synchronously.
public enum Message {
    /// Encrypts `source` into `sink` as one message; returns its header.
    @discardableResult
    public static func encrypt(
        from source: inout some ByteSource, to sink: inout some ByteSink,
        materialsManager: some CryptographicMaterialsManager, context: EncryptionContext,
        suite: AlgorithmSuite? = nil, frameLength: Int = MessageEncryptor.defaultFrameLength,
        plaintextLength: Int? = nil, commitmentPolicy: CommitmentPolicy = .requireEncryptRequireDecrypt
    ) async throws -> MessageHeader {
        let materials = try await materialsManager.encryptionMaterials(for: EncryptionMaterialsRequest(
            encryptionContext: context, suite: suite, plaintextLength: plaintextLength, commitmentPolicy: commitmentPolicy))
        // A small file of an unsigned suite: read whole and sealed in one call.
        if !materials.suite.isSigned, let positional = source as? any PositionalByteSource,
           positional.remaining <= MessageEncryptor.oneShotLimit {
            let count = positional.remaining
            let plaintext = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 16)
            defer {
                kw_cleanse(plaintext.baseAddress, count)
                plaintext.deallocate()
            }
            try [UnsafeMutableRawBufferPointer(rebasing: plaintext[0..<count])].withUnsafeBufferPointer { try positional.read(at: 0, into: $0) }
            positional.consume(count)
            guard try !source.nextChunk({ _ in }) else {
                throw KeywardCryptoError(.internalError, "the input grew while it was read")
            }
            let (header, body) = try MessageEncryptor.seal(UnsafeRawBufferPointer(rebasing: plaintext[0..<count]), materials: materials,
                                                           frameLength: frameLength)
            try header.withUnsafeBytes { try sink.write($0) }
            try body.withUnsafeBytes { try sink.write($0) }
            return try header.withUnsafeBytes { try MessageHeader.parse(prefixOf: $0).0 }
        }
        var encryptor = try MessageEncryptor(materials: materials, frameLength: frameLength)
        if let positional = source as? any PositionalByteSource {
            try encryptor.update(readingFrom: positional) { try sink.write($0) }
        }
        while try source.nextChunk({ chunk in
            try encryptor.update(chunk)
            try encryptor.drain { try sink.write($0) }
        }) {}
        try encryptor.finish()
        try encryptor.drain { try sink.write($0) }
        return encryptor.header
    }

    /// Decrypts one message from `source` into `sink`; returns its header.
    ///
    /// On failure, bytes already written to `sink` were authenticated frames of an incomplete or
    /// unverified message: the caller must discard them.
    @discardableResult
    public static func decrypt(
        from source: inout some ByteSource, to sink: inout some ByteSink,
        materialsManager: some CryptographicMaterialsManager, options: DecryptionOptions = DecryptionOptions()
    ) async throws -> MessageHeader {
        var decryptor = MessageDecryptor(options: options)
        let positional = source as? any PositionalByteSource
        while try source.nextChunk({ try decryptor.update($0) }) {
            // The one await: fetching materials once the header is in. Chunks read meanwhile wait
            // inside the decryptor.
            if let request = decryptor.materialsRequest {
                try decryptor.begin(with: try await materialsManager.decryptionMaterials(for: request))
            }
            try decryptor.drain { try sink.write($0) }
            if let positional { try decryptor.update(readingFrom: positional) { try sink.write($0) } }
        }
        try decryptor.finish()
        try decryptor.drain { try sink.write($0) }
        return decryptor.header!
    }

    /// Encrypts bytes in memory.
    public static func encrypt(
        _ plaintext: [UInt8], materialsManager: some CryptographicMaterialsManager, context: EncryptionContext,
        suite: AlgorithmSuite? = nil, frameLength: Int = MessageEncryptor.defaultFrameLength,
        commitmentPolicy: CommitmentPolicy = .requireEncryptRequireDecrypt
    ) async throws -> [UInt8] {
        var source = ArraySource(plaintext)
        var sink = ArraySink()
        try await encrypt(from: &source, to: &sink, materialsManager: materialsManager, context: context, suite: suite,
                          frameLength: frameLength, plaintextLength: plaintext.count, commitmentPolicy: commitmentPolicy)
        return sink.bytes
    }

    /// Decrypts a message in memory; nothing is returned unless the whole message verifies.
    public static func decrypt(
        _ message: [UInt8], materialsManager: some CryptographicMaterialsManager,
        options: DecryptionOptions = DecryptionOptions()
    ) async throws -> (plaintext: [UInt8], header: MessageHeader) {
        var source = ArraySource(message)
        var sink = ArraySink()
        let header = try await decrypt(from: &source, to: &sink, materialsManager: materialsManager, options: options)
        return (sink.bytes, header)
    }
}
