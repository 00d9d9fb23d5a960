import Foundation
import KeywardCrypto

/// AWS KMS as a key store. Keys are named by ARN; the region comes from the ARN. Encrypted data
/// keys are written exactly as the ESDK's KMS keyring writes them (provider ID `aws-kms`, provider
/// info the key ARN, ciphertext the KMS ciphertext blob), and the encryption context is passed to
/// KMS as its encryption context, so `aws-encryption-cli` reads Keyward's messages and the reverse.
public final class AWSKMSKeyStore: KeyStore {
    public let scheme = "aws-kms"
    public let providerID = "aws-kms"
    public let client: AWSKMSClient
    /// The region for calls that name no key (create, list): `AWS_REGION` / `AWS_DEFAULT_REGION`.
    public let defaultRegion: String?

    public init(client: AWSKMSClient, defaultRegion: String? = nil) {
        self.client = client
        self.defaultRegion = defaultRegion
    }

    public static func fromEnvironment(region: String? = nil) throws -> AWSKMSKeyStore {
        let env = ProcessInfo.processInfo.environment
        return AWSKMSKeyStore(client: AWSKMSClient(credentials: try .fromEnvironment(), configuration: .fromEnvironment()),
                              defaultRegion: region ?? env["AWS_REGION"] ?? env["AWS_DEFAULT_REGION"])
    }

    private func call(_ operation: String, key: String, _ parameters: [String: Any]) async throws -> [String: Any] {
        try await client.call(operation, region: try KeyReference.awsRegion(ofARN: key), parameters)
    }

    /// Life-cycle calls name the key by its bare ID: KMS accepts an ID or an ARN there (only the key's
    /// owner may call them, so the ARN adds nothing), and moto's server accepts only the ID.
    private func manage(_ operation: String, key: String, _ extra: [String: Any] = [:]) async throws -> [String: Any] {
        let id = key.split(separator: ":").last.map { $0.hasPrefix("key/") ? String($0.dropFirst(4)) : key } ?? key
        return try await call(operation, key: key, extra.merging(["KeyId": id]) { $1 })
    }

    private func regionless(_ operation: String, _ parameters: [String: Any]) async throws -> [String: Any] {
        guard let region = defaultRegion else {
            throw KeyStoreError(.invalidArgument, "name a region: --region, AWS_REGION or AWS_DEFAULT_REGION")
        }
        return try await client.call(operation, region: region, parameters)
    }

    static func contextMap(_ context: EncryptionContext) -> [String: String] {
        Dictionary(context.map { ($0.keyString, $0.valueString) }, uniquingKeysWith: { $1 })
    }

    static func blob(_ json: [String: Any], _ field: String, _ operation: String) throws -> Data {
        guard let text = json[field] as? String, let data = Data(base64Encoded: text) else {
            throw KeyStoreError(.keyUnavailable, "AWS KMS \(operation) answered without \(field)")
        }
        return data
    }

    static func keyARN(_ json: [String: Any], _ operation: String) throws -> String {
        guard let arn = json["KeyId"] as? String else { throw KeyStoreError(.keyUnavailable, "AWS KMS \(operation) answered without KeyId") }
        return arn
    }

    public func generateDataKey(keyID: String, length: Int, context: EncryptionContext) async throws -> (plaintext: SecretBytes, wrapped: WrappedKey) {
        let json = try await call("GenerateDataKey", key: keyID,
                                  ["KeyId": keyID, "NumberOfBytes": length, "EncryptionContext": Self.contextMap(context)])
        let plaintext = SecretBytes(copying: try Self.blob(json, "Plaintext", "GenerateDataKey"))
        guard plaintext.count == length else { throw KeyStoreError(.keyUnavailable, "AWS KMS returned a data key of the wrong length") }
        return (plaintext, WrappedKey(ciphertext: Array(try Self.blob(json, "CiphertextBlob", "GenerateDataKey")),
                                      keyID: try Self.keyARN(json, "GenerateDataKey")))
    }

    public func encrypt(keyID: String, plaintext: SecretBytes, context: EncryptionContext) async throws -> WrappedKey {
        let encoded = plaintext.withUnsafeBytes { Data($0).base64EncodedString() }
        let json = try await call("Encrypt", key: keyID, ["KeyId": keyID, "Plaintext": encoded, "EncryptionContext": Self.contextMap(context)])
        return WrappedKey(ciphertext: Array(try Self.blob(json, "CiphertextBlob", "Encrypt")), keyID: try Self.keyARN(json, "Encrypt"))
    }

    public func decrypt(keyID: String, ciphertext: [UInt8], context: EncryptionContext) async throws -> SecretBytes {
        let json = try await call("Decrypt", key: keyID, [
            "KeyId": keyID, "CiphertextBlob": Data(ciphertext).base64EncodedString(), "EncryptionContext": Self.contextMap(context),
        ])
        // As the ESDK does: the key KMS used must be the one asked for.
        guard try Self.keyARN(json, "Decrypt") == keyID else {
            throw KeyStoreError(.invalidCiphertext, "AWS KMS decrypted with another key than \(keyID)")
        }
        return SecretBytes(copying: try Self.blob(json, "Plaintext", "Decrypt"))
    }

    public func reEncrypt(ciphertext: [UInt8], from source: String, sourceContext: EncryptionContext,
                          to destination: String, destinationContext: EncryptionContext) async throws -> WrappedKey {
        let json = try await call("ReEncrypt", key: destination, [
            "CiphertextBlob": Data(ciphertext).base64EncodedString(), "SourceKeyId": source,
            "SourceEncryptionContext": Self.contextMap(sourceContext), "DestinationKeyId": destination,
            "DestinationEncryptionContext": Self.contextMap(destinationContext),
        ])
        return WrappedKey(ciphertext: Array(try Self.blob(json, "CiphertextBlob", "ReEncrypt")), keyID: try Self.keyARN(json, "ReEncrypt"))
    }

    public func describe(keyID: String) async throws -> KeyDescription {
        let json = try await call("DescribeKey", key: keyID, ["KeyId": keyID])
        guard let metadata = json["KeyMetadata"] as? [String: Any] else {
            throw KeyStoreError(.keyUnavailable, "AWS KMS DescribeKey answered without KeyMetadata")
        }
        var description = Self.description(metadata)
        let rotation = try await manage("GetKeyRotationStatus", key: keyID)
        description.rotationEnabled = rotation["KeyRotationEnabled"] as? Bool
        return description
    }

    static func description(_ metadata: [String: Any]) -> KeyDescription {
        let state: KeyState = switch metadata["KeyState"] as? String {
        case "Enabled": .enabled
        case "PendingDeletion", "PendingReplicaDeletion": .pendingDeletion
        default: .disabled
        }
        func date(_ field: String) -> Date? { (metadata[field] as? Double).map { Date(timeIntervalSince1970: $0) } }
        return KeyDescription(reference: "aws-kms:\(metadata["Arn"] as? String ?? "?")", state: state,
                              created: date("CreationDate"), deletionDate: date("DeletionDate"))
    }

    public func createKey(name: String?) async throws -> KeyDescription {
        var parameters: [String: Any] = ["KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "SYMMETRIC_DEFAULT"]
        if let name { parameters["Description"] = name }
        let json = try await regionless("CreateKey", parameters)
        guard let metadata = json["KeyMetadata"] as? [String: Any] else {
            throw KeyStoreError(.keyUnavailable, "AWS KMS CreateKey answered without KeyMetadata")
        }
        return Self.description(metadata)
    }

    public func enableKey(keyID: String) async throws { _ = try await manage("EnableKey", key: keyID) }
    public func disableKey(keyID: String) async throws { _ = try await manage("DisableKey", key: keyID) }

    /// A new key version now (RotateKeyOnDemand); scheduled yearly rotation is switched on as well.
    public func rotateKey(keyID: String) async throws {
        _ = try await manage("EnableKeyRotation", key: keyID)
        _ = try await manage("RotateKeyOnDemand", key: keyID)
    }

    public var deletion: KeyDeletion { .scheduled }

    public func scheduleKeyDeletion(keyID: String, days: Int) async throws -> Date {
        try Self.checkWaitingPeriod(days)
        let json = try await manage("ScheduleKeyDeletion", key: keyID, ["PendingWindowInDays": days])
        return (json["DeletionDate"] as? Double).map { Date(timeIntervalSince1970: $0) } ?? Date().addingTimeInterval(Double(days) * 86_400)
    }

    public func cancelKeyDeletion(keyID: String) async throws { _ = try await manage("CancelKeyDeletion", key: keyID) }

    public func listKeys() async throws -> [KeyDescription] {
        var result: [KeyDescription] = []
        var marker: String?
        repeat {
            var parameters: [String: Any] = ["Limit": 1000]
            if let marker { parameters["Marker"] = marker }
            let json = try await regionless("ListKeys", parameters)
            for entry in json["Keys"] as? [[String: Any]] ?? [] {
                if let arn = entry["KeyArn"] as? String { result.append(try await describe(keyID: arn)) }
            }
            marker = (json["Truncated"] as? Bool == true) ? json["NextMarker"] as? String : nil
        } while marker != nil
        return result
    }
}
