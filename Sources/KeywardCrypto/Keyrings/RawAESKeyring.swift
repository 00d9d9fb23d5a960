/// A wrapping key held by the caller, wire-compatible with the ESDK's raw AES keyring.
///
/// Each encrypted data key is AES-GCM(data key) with a random IV and the serialized encryption
/// context as AAD; the provider ID is the namespace and the provider info is
/// `name || tag length in bits (4 bytes) || IV length (4 bytes) || IV`.
public struct RawAESKeyring: Keyring, CustomStringConvertible {
    public let namespace: String
    public let name: String
    private let wrappingKey: SecretBytes

    public init(namespace: String, name: String, key: SecretBytes) throws {
        try validateRawNamespace(namespace)
        guard [16, 24, 32].contains(key.count) else {
            throw KeywardCryptoError(.invalidKey, "a raw AES wrapping key is 16, 24 or 32 bytes, not \(key.count)")
        }
        self.namespace = namespace
        self.name = name
        self.wrappingKey = key
    }

    public var description: String { "raw-aes:namespace=\(namespace),name=\(name)" }

    private var infoPrefix: [UInt8] {
        var p = Array(name.utf8)
        p.appendUInt32(UInt32(AESGCMContext.tagLength * 8))
        p.appendUInt32(UInt32(AESGCMContext.ivLength))
        return p
    }

    public func onEncrypt(_ materials: EncryptionMaterials) async throws -> EncryptionMaterials {
        var m = materials
        let dataKey = m.dataKeyGeneratingIfNeeded()
        var iv = [UInt8](repeating: 0, count: AESGCMContext.ivLength)
        SecretBytes(randomCount: iv.count).withUnsafeBytes { iv = Array($0) }
        let sealed = try dataKey.withUnsafeBytes { k in
            try AESGCMContext.seal(key: wrappingKey, iv: iv, aad: try m.encryptionContext.serialized(), plaintext: k)
        }
        m.encryptedDataKeys.append(EncryptedDataKey(
            providerID: Array(namespace.utf8), providerInfo: infoPrefix + iv, ciphertext: sealed))
        return m
    }

    public func onDecrypt(_ materials: DecryptionMaterials, encryptedDataKeys: [EncryptedDataKey]) async throws -> DecryptionMaterials {
        guard materials.plaintextDataKey == nil else { return materials }
        let prefix = infoPrefix
        let aad = try materials.encryptionContext.serialized()
        for edk in encryptedDataKeys
        where edk.providerID.elementsEqual(namespace.utf8)
            && edk.providerInfo.count == prefix.count + AESGCMContext.ivLength
            && edk.providerInfo.starts(with: prefix) {
            let iv = Array(edk.providerInfo.suffix(AESGCMContext.ivLength))
            // A tag mismatch means another key of the same name or a different context: try the next.
            if let key = try AESGCMContext.openSecret(key: wrappingKey, iv: iv, aad: aad, sealed: edk.ciphertext),
               key.count == materials.suite.keyLength {
                var m = materials
                m.plaintextDataKey = key
                return m
            }
        }
        return materials
    }
}
