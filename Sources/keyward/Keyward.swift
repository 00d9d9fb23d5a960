import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import KeywardCrypto
import KeywardKeyStores

@main
struct Keyward: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyward",
        abstract: "Keyward: an AI gateway and file encryption under keys you own, in the AWS Encryption SDK message format.",
        subcommands: [ServeCommand.self, EncryptCommand.self, DecryptCommand.self, KeysCommand.self,
                      TenantsCommand.self, TokensCommand.self, JobsCommand.self, AuditCommand.self, ChatCommand.self])

    /// Exit codes: 0 success, 1 encryption/decryption failure, 2 usage error.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            Glibc.exit(0)
        } catch let error as CLIError {
            fail(error.description, code: error.exitCode)
        } catch let error as KeyStoreError {
            fail(error.description, code: error.code == .invalidArgument ? 2 : 1)
        } catch let error as KeywardCryptoError {
            // Bad arguments found while loading keys are usage errors; the rest failed at run time.
            fail(error.description, code: error.code == .invalidArgument ? 2 : 1)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Glibc.exit(0)
            }
            fail(fullMessage(for: error), code: 2)
        }
    }

    private static func fail(_ message: String, code: Int32) -> Never {
        var stderr = StandardError()
        print("keyward: error: \(message)", to: &stderr)
        Glibc.exit(code)
    }
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        var s = string
        s.withUTF8 { _ = Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}

/// Options both directions share.
struct CommonOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Input file, or - for standard input.")
    var input: String

    @Option(name: .shortAndLong, help: "Output file, or - for standard output. Written only on success.")
    var output: String

    @Option(name: .customLong("wrapping-key"), help: ArgumentHelp(
        "A wrapping key: local:NAME, aws-kms:ARN, pkcs11:URI, raw-aes:namespace=NS,name=NAME,key=@FILE|base64:… or raw-rsa:namespace=NS,name=NAME,key=@PEM,padding=P. Repeatable.",
        valueName: "SPEC"))
    var wrappingKeys: [String] = []

    @Option(name: .customLong("context"), help: ArgumentHelp("An encryption context pair. Repeatable.", valueName: "K=V"))
    var context: [String] = []

    @Option(name: .customLong("commitment-policy"), help: ArgumentHelp(
        "require-encrypt-require-decrypt (default), require-encrypt-allow-decrypt or forbid-encrypt-allow-decrypt.",
        valueName: "P"))
    var commitmentPolicy: String = CommitmentPolicy.requireEncryptRequireDecrypt.rawValue

    func validate() throws {
        guard !wrappingKeys.isEmpty else { throw ValidationError("at least one --wrapping-key is required") }
        guard CommitmentPolicy(rawValue: commitmentPolicy) != nil else {
            throw ValidationError("unknown commitment policy \(commitmentPolicy)")
        }
        _ = try parsedContext()
    }

    var policy: CommitmentPolicy { CommitmentPolicy(rawValue: commitmentPolicy)! }

    func parsedContext() throws -> EncryptionContext {
        var result = EncryptionContext()
        for pair in context {
            guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
                throw ValidationError("--context takes KEY=VALUE")
            }
            let key = Array(pair[..<eq].utf8)
            guard result.value(forKey: key) == nil else { throw ValidationError("--context key given twice") }
            result.setValue(Array(pair[pair.index(after: eq)...].utf8), forKey: key)
        }
        return result
    }

    @OptionGroup var stores: KeyStoreOptions

    func keyring() throws -> any Keyring { try stores.keyStores().keyring(for: wrappingKeys) }
}

/// Where the key stores are.
struct KeyStoreOptions: ParsableArguments {
    @Option(name: .customLong("keystore"), help: ArgumentHelp("The local key store folder (default: $KEYWARD_KEYSTORE).", valueName: "DIR"))
    var keystore: String?

    @Option(name: .customLong("root-key-file"), help: ArgumentHelp(
        "The local key store's root key (default: $KEYWARD_ROOT_KEY_FILE, else DIR/root.key; $KEYWARD_ROOT_PASSPHRASE uses a passphrase instead).",
        valueName: "FILE"))
    var rootKeyFile: String?

    @Option(help: ArgumentHelp("The AWS region for commands that name no key (default: $AWS_REGION).", valueName: "R"))
    var region: String?

    func keyStores() -> KeyStores {
        KeyStores(configuration: .fromEnvironment(localFolder: keystore, rootKeyFile: rootKeyFile, awsRegion: region))
    }
}
