/// An RSA wrapping key held by the caller, wire-compatible with the ESDK's raw RSA keyring:
/// provider ID = namespace, provider info = key name, ciphertext = RSA(data key). RSA cannot bind
/// the encryption context; the message's header tag still does.
public struct RawRSAKeyring: Keyring, CustomStringConvertible {
    public let namespace: String
    public let name: String
    public let padding: RSAKey.Padding
    private let key: RSAKey

    public init(namespace: String, name: String, key: RSAKey, padding: RSAKey.Padding) throws {
        try validateRawNamespace(namespace)
        self.namespace = namespace
        self.name = name
        self.key = key
        self.padding = padding
    }

    public var description: String { "raw-rsa:namespace=\(namespace),name=\(name),padding=\(padding.rawValue)" }

    public func onEncrypt(_ materials: EncryptionMaterials) async throws -> EncryptionMaterials {
        var m = materials
        let ciphertext = try m.dataKeyGeneratingIfNeeded().withUnsafeBytes { try key.encrypt($0, padding: padding) }
        m.encryptedDataKeys.append(EncryptedDataKey(
            providerID: Array(namespace.utf8), providerInfo: Array(name.utf8), ciphertext: ciphertext))
        return m
    }

    public func onDecrypt(_ materials: DecryptionMaterials, encryptedDataKeys: [EncryptedDataKey]) async throws -> DecryptionMaterials {
        guard materials.plaintextDataKey == nil else { return materials }
        let mine = encryptedDataKeys.filter {
            $0.providerID.elementsEqual(namespace.utf8) && $0.providerInfo.elementsEqual(name.utf8)
        }
        guard !mine.isEmpty else { return materials }
        guard key.isPrivate else {
            throw KeywardCryptoError(.invalidKey, "\(self) has only a public key and cannot decrypt")
        }
        for edk in mine {
            if let dataKey = key.decrypt(edk.ciphertext, padding: padding), dataKey.count == materials.suite.keyLength {
                var m = materials
                m.plaintextDataKey = dataKey
                return m
            }
        }
        return materials
    }
}
