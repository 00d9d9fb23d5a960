import Foundation
import KeywardCrypto
import Synchronization

/// Where the key stores are, for resolving key references: the local store's folder and root key,
/// and (later) the AWS and PKCS#11 settings.
public struct KeyStoreConfiguration: Sendable {
    /// The local key store folder (`--keystore`, `KEYWARD_KEYSTORE`).
    public var localFolder: String?
    /// The root key file (`--root-key-file`, `KEYWARD_ROOT_KEY_FILE`).
    public var rootKeyFile: String?
    /// The AWS region for calls that name no key (`--region`, `AWS_REGION`, `AWS_DEFAULT_REGION`).
    public var awsRegion: String?
    /// The KMIP server and Keyward's identity to it (a gateway's config file); nil: the
    /// `KEYWARD_KMIP_*` variables.
    public var kmip: KMIPConfiguration?

    public init(localFolder: String? = nil, rootKeyFile: String? = nil, awsRegion: String? = nil, kmip: KMIPConfiguration? = nil) {
        self.localFolder = localFolder
        self.rootKeyFile = rootKeyFile
        self.awsRegion = awsRegion
        self.kmip = kmip
    }

    /// Fills what was not given from the environment.
    public static func fromEnvironment(localFolder: String? = nil, rootKeyFile: String? = nil, awsRegion: String? = nil,
                                       kmip: KMIPConfiguration? = nil) -> KeyStoreConfiguration {
        let env = ProcessInfo.processInfo.environment
        return KeyStoreConfiguration(localFolder: localFolder ?? env["KEYWARD_KEYSTORE"],
                                     rootKeyFile: rootKeyFile ?? env["KEYWARD_ROOT_KEY_FILE"],
                                     awsRegion: awsRegion ?? env["AWS_REGION"] ?? env["AWS_DEFAULT_REGION"], kmip: kmip)
    }
}

/// Opens each key store on first use and resolves references and wrapping-key specs against them.
public final class KeyStores: Sendable {
    public let configuration: KeyStoreConfiguration
    private let opened = Mutex<[String: any KeyStore]>([:])
    private let overlay = Mutex<(any KeyStateOverlay)?>(nil)

    public init(configuration: KeyStoreConfiguration) {
        self.configuration = configuration
    }

    /// Sees every store through Keyward's own key states from now on (a gateway's, kept in its
    /// database): a key Keyward revoked wraps and unwraps nothing, whatever its store says.
    public func govern(by overlay: any KeyStateOverlay) {
        self.overlay.withLock { $0 = overlay }
    }

    /// The store that serves `reference`'s scheme (seen through Keyward's key states, if governed).
    public func store(for reference: KeyReference) throws -> any KeyStore {
        let store = try rawStore(for: reference)
        guard let overlay = overlay.withLock({ $0 }) else { return store }
        return GovernedKeyStore(inner: store, overlay: overlay)
    }

    private func rawStore(for reference: KeyReference) throws -> any KeyStore {
        if let store = opened.withLock({ $0[reference.scheme] }) { return store }
        let store: any KeyStore
        switch reference.scheme {
        case "local":
            guard let folder = configuration.localFolder else {
                throw KeyStoreError(.invalidArgument, "local: keys need a key store folder: --keystore DIR or KEYWARD_KEYSTORE")
            }
            store = try LocalKeyStore(folder: folder, rootKey: .fromEnvironment(keyStoreFolder: folder, rootKeyFile: configuration.rootKeyFile))
        case "aws-kms":
            store = try AWSKMSKeyStore.fromEnvironment(region: configuration.awsRegion)
        case "pkcs11":
            store = try PKCS11KeyStore.fromEnvironment()
        case "vault-transit":
            store = try VaultTransitKeyStore.fromEnvironment()
        case "kmip":
            store = try configuration.kmip.map { KMIPKeyStore(client: try KMIPClient(configuration: $0)) } ?? KMIPKeyStore.fromEnvironment()
        default:
            throw KeyStoreError(.invalidArgument, "\(reference.scheme): keys are not supported yet")
        }
        return opened.withLock { opened in
            if let existing = opened[reference.scheme] { return existing }
            opened[reference.scheme] = store
            return store
        }
    }

    /// Uses `store` for its scheme from now on (a store built with other options, e.g. a test clock).
    public func install(_ store: any KeyStore) {
        opened.withLock { $0[store.scheme] = store }
    }

    /// A keyring for one wrapping-key spec: a key-store reference or a raw keyring spec.
    public func keyring(for spec: String) throws -> any Keyring {
        if KeyReference(parsing: spec) != nil {
            let reference = try KeyReference.parse(spec)
            return KeyStoreKeyring(store: try store(for: reference), keyID: reference.keyID)
        }
        return try WrappingKeySpec.keyring(from: spec)
    }

    /// A keyring for several specs: the first generates the data key, all wrap it, any decrypts.
    public func keyring(for specs: [String]) throws -> any Keyring {
        try MultiKeyring.combining(try specs.map(keyring(for:)))
    }
}
