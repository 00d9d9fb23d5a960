/// Combines keyrings: the generator makes the data key, every child wraps it too, and any one of
/// them can decrypt.
public struct MultiKeyring: Keyring {
    public let generator: (any Keyring)?
    public let children: [any Keyring]

    /// One keyring for several: the first generates the data key, every one wraps it, any one decrypts.
    public static func combining(_ keyrings: [any Keyring]) throws -> any Keyring {
        guard let first = keyrings.first else {
            throw KeywardCryptoError(.invalidArgument, "at least one wrapping key is needed")
        }
        return keyrings.count == 1 ? first : try MultiKeyring(generator: first, children: Array(keyrings.dropFirst()))
    }

    public init(generator: (any Keyring)?, children: [any Keyring] = []) throws {
        guard generator != nil || !children.isEmpty else {
            throw KeywardCryptoError(.invalidArgument, "a multi-keyring needs a generator or at least one child")
        }
        self.generator = generator
        self.children = children
    }

    public func onEncrypt(_ materials: EncryptionMaterials) async throws -> EncryptionMaterials {
        var m = materials
        if let generator {
            m = try await generator.onEncrypt(m)
        } else if m.plaintextDataKey == nil {
            throw KeywardCryptoError(.invalidArgument, "a multi-keyring without a generator needs a data key to wrap")
        }
        for child in children { m = try await child.onEncrypt(m) }
        return m
    }

    public func onDecrypt(_ materials: DecryptionMaterials, encryptedDataKeys: [EncryptedDataKey]) async throws -> DecryptionMaterials {
        guard materials.plaintextDataKey == nil else { return materials }
        var firstError: (any Error)?
        for keyring in (generator.map { [$0] } ?? []) + children {
            do {
                let m = try await keyring.onDecrypt(materials, encryptedDataKeys: encryptedDataKeys)
                if m.plaintextDataKey != nil { return m }
            } catch {
                // Another keyring may still succeed; report the first failure only if none does.
                firstError = firstError ?? error
            }
        }
        if let firstError { throw firstError }
        return materials
    }
}
