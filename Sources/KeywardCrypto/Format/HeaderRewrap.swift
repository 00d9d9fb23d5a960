/// Replaces the encrypted data keys of a stored message's header without touching its body: the
/// re-key and rotation path. Only unsigned version 2 committing suites can be rewritten (a
/// signature covers the header, and only the commitment lets a reader check the same data key is
/// still inside).
public enum HeaderRewrap {
    /// Checks `header` (a complete header, authentication tag included) against `dataKey`, then
    /// returns it with `encryptedDataKeys` in place of its own and a new header tag. The message ID,
    /// context, commitment and so every frame of the body stay valid.
    ///
    /// - Throws: ``KeywardCryptoError`` if the header is not of a rewritable suite, if the data key
    ///   does not match its commitment, or if it does not authenticate.
    public static func rewrap(_ header: [UInt8], dataKey: SecretBytes, encryptedDataKeys: [EncryptedDataKey]) throws -> [UInt8] {
        try rewrap(parse(header), dataKey: dataKey, encryptedDataKeys: encryptedDataKeys)
    }

    /// A complete stored header, parsed (for callers that read its keys first).
    public static func parse(_ header: [UInt8]) throws -> MessageHeader {
        let (parsed, length) = try header.withUnsafeBytes { try MessageHeader.parse(prefixOf: $0) }
        guard length == header.count else {
            throw KeywardCryptoError(.malformedMessage, "the header has trailing bytes")
        }
        return parsed
    }

    /// The same, for a header from ``parse(_:)``; with `encryptionContext`, the header names that
    /// context instead of its own (the data keys must be wrapped under it: a keyring binds a data
    /// key to the context it wraps it with). Frames do not depend on the context, so they stay valid.
    public static func rewrap(_ header: MessageHeader, dataKey: SecretBytes, encryptedDataKeys: [EncryptedDataKey],
                              encryptionContext: EncryptionContext? = nil) throws -> [UInt8] {
        var parsed = header
        let suite = parsed.suite
        guard suite.messageFormatVersion == 2, suite.isCommitting, !suite.isSigned else {
            throw KeywardCryptoError(.unsupportedAlgorithm, "only unsigned committing suites can be re-wrapped, not \(suite)")
        }
        guard dataKey.count == suite.keyLength else {
            throw KeywardCryptoError(.invalidArgument, "the data key's length does not match the suite")
        }
        let (contentKey, commit) = KeyDerivation.committingKeys(dataKey: dataKey, suite: suite, messageID: parsed.messageID)
        guard commit.withUnsafeBytes({ a in parsed.commitKey.withUnsafeBytes { b in constantTimeEqual(a, b) } }) else {
            throw KeywardCryptoError(.commitmentMismatch, "the data key does not match the message's key commitment")
        }
        let cipher = try AESGCMContext(key: contentKey, sealing: false)
        let zeroIV = [UInt8](repeating: 0, count: suite.ivLength)
        guard try tag(cipher, zeroIV, parsed.bodyBytes, check: parsed.authTag) != nil else {
            throw KeywardCryptoError(.authenticationFailed, "the message header does not authenticate")
        }
        parsed.encryptedDataKeys = encryptedDataKeys
        if let encryptionContext { parsed.encryptionContext = encryptionContext }
        try parsed.serializeBodyV2()
        let sealer = try AESGCMContext(key: contentKey, sealing: true)
        guard let newTag = try tag(sealer, zeroIV, parsed.bodyBytes, check: nil) else {
            throw KeywardCryptoError(.internalError, "could not seal the header")
        }
        return parsed.bodyBytes + newTag
    }

    /// Seals (check nil) or opens (check = the tag) an empty plaintext with `body` as AAD.
    private static func tag(_ cipher: AESGCMContext, _ iv: [UInt8], _ body: [UInt8], check: [UInt8]?) throws -> [UInt8]? {
        try iv.withUnsafeBytes { iv in
            try body.withUnsafeBytes { aad in
                let empty = UnsafeRawBufferPointer(start: nil, count: 0)
                if let check {
                    var scratch: UInt8 = 0
                    let ok = try check.withUnsafeBytes { try cipher.open(iv: iv, aad: aad, input: empty, output: &scratch, tag: $0) }
                    return ok ? check : nil
                }
                var out = [UInt8](repeating: 0, count: 16)
                try out.withUnsafeMutableBytes { t in
                    try cipher.seal(iv: iv, aad: aad, input: empty, output: t.baseAddress!, tag: t.baseAddress!)
                }
                return out
            }
        }
    }
}
