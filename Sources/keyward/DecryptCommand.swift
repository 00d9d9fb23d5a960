import ArgumentParser
import KeywardCrypto

struct DecryptCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decrypt",
        abstract: "Decrypt an AWS Encryption SDK message. With --context, the given pairs must be in the message.")

    @OptionGroup var common: CommonOptions

    @Option(name: .customLong("max-encrypted-data-keys"), help: "Refuse messages with more encrypted data keys.")
    var maxEncryptedDataKeys: Int?

    func validate() throws {
        if let maxEncryptedDataKeys, maxEncryptedDataKeys < 1 {
            throw ValidationError("--max-encrypted-data-keys must be at least 1")
        }
    }

    func run() async throws {
        let manager = DefaultMaterialsManager(keyring: try common.keyring())
        var source = try openInput(common.input)
        let output = try AtomicOutput(path: common.output)
        var sink = output.sink
        try await Message.decrypt(
            from: &source, to: &sink, materialsManager: manager,
            options: DecryptionOptions(
                commitmentPolicy: common.policy, requiredContext: try common.parsedContext(),
                maxEncryptedDataKeys: maxEncryptedDataKeys))
        try output.commit()
    }
}
