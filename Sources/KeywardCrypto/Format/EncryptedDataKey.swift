/// A data key wrapped by one master key, as it appears in a message header.
public struct EncryptedDataKey: Hashable, Sendable {
    /// Who can unwrap it: a raw keyring's namespace, `aws-kms`, …
    public var providerID: [UInt8]
    /// Which key of that provider, plus whatever the provider needs (a raw AES keyring's IV).
    public var providerInfo: [UInt8]
    public var ciphertext: [UInt8]

    public init(providerID: [UInt8], providerInfo: [UInt8], ciphertext: [UInt8]) {
        self.providerID = providerID
        self.providerInfo = providerInfo
        self.ciphertext = ciphertext
    }

    public var providerIDString: String { String(decoding: providerID, as: UTF8.self) }

    /// Hashes each field's bytes in one call: `[UInt8]`'s own hashing feeds the hasher byte by
    /// byte, which a data-key cache lookup per record cannot afford.
    public func hash(into hasher: inout Hasher) {
        for field in [providerID, providerInfo, ciphertext] {
            hasher.combine(field.count)
            field.withUnsafeBytes { hasher.combine(bytes: $0) }
        }
    }
}
