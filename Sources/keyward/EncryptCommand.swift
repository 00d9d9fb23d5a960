import ArgumentParser
import KeywardCrypto

struct EncryptCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encrypt",
        abstract: "Encrypt a file into an AWS Encryption SDK message (format version 2).")

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("0x0578 (default, signed) or 0x0478, or the ESDK suite name.", valueName: "SUITE"))
    var algorithm: String = "0x0578"

    @Option(name: .customLong("frame-length"), help: "Plaintext bytes per frame (1 to 4294967295).")
    var frameLength: Int = MessageEncryptor.defaultFrameLength

    func validate() throws {
        guard let suite = AlgorithmSuite(parsing: algorithm), suite.messageFormatVersion == 2 else {
            throw ValidationError("--algorithm must be 0x0478 or 0x0578 (or their ESDK names)")
        }
        guard frameLength > 0, frameLength <= Int(UInt32.max) else {
            throw ValidationError("--frame-length must be between 1 and 4294967295")
        }
    }

    func run() async throws {
        let manager = DefaultMaterialsManager(keyring: try common.keyring())
        var source = try openInput(common.input)
        let output = try AtomicOutput(path: common.output)
        var sink = output.sink
        try await Message.encrypt(
            from: &source, to: &sink, materialsManager: manager, context: try common.parsedContext(),
            suite: AlgorithmSuite(parsing: algorithm)!, frameLength: frameLength, commitmentPolicy: common.policy)
        try output.commit()
    }
}
