import ArgumentParser
import AsyncHTTPClient
import Foundation
import KeywardCrypto
import NIOCore
import NIOHTTP1

/// `keyward chat`: one chat request encrypted here under the tenant's key (an ESDK message,
/// `Content-Encoding: aws-esdk`), and its answer decrypted and checked here: the prompt and the
/// answer cross every proxy on the way as ciphertext.
struct ChatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Send a chat request encrypted under the tenant's key and print the decrypted answer (token from KEYWARD_TOKEN).")

    @Option(help: "The gateway's URL (default: KEYWARD_URL, else http://127.0.0.1:8080).")
    var url: String?

    @Option(help: "The model.")
    var model: String

    @Option(help: "The token's tenant, named in the request's encryption context (default: KEYWARD_TENANT).")
    var tenant: String?

    @Option(name: .customLong("wrapping-key"), help: ArgumentHelp(
        "The tenant's master key as the app holds it: aws-kms:ARN, local:NAME, pkcs11:URI, … Repeatable.", valueName: "SPEC"))
    var wrappingKeys: [String] = []

    @Flag(help: "Stream the answer as it is generated.")
    var stream = false

    @Argument(help: "The prompt, or - to read it from standard input.")
    var prompt: String

    @OptionGroup var stores: KeyStoreOptions

    func validate() throws {
        guard !wrappingKeys.isEmpty else { throw ValidationError("give the tenant's key with --wrapping-key") }
    }

    func run() async throws {
        let env = ProcessInfo.processInfo.environment
        guard let token = env["KEYWARD_TOKEN"], !token.isEmpty else {
            throw CLIError(exitCode: 2, description: "an app token is needed in KEYWARD_TOKEN")
        }
        guard let tenant = tenant ?? env["KEYWARD_TENANT"], !tenant.isEmpty else {
            throw CLIError(exitCode: 2, description: "name the token's tenant: --tenant or KEYWARD_TENANT")
        }
        let text = prompt == "-" ? String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) : prompt
        // Cached: a streamed answer is many messages under one data key.
        let manager = CachingMaterialsManager(backing: DefaultMaterialsManager(keyring: try stores.keyStores().keyring(for: wrappingKeys)),
                                              limits: CacheLimits(maxAge: 300))
        let body = try JSONSerialization.data(withJSONObject: [
            "model": model, "stream": stream, "messages": [["role": "user", "content": text]],
        ] as [String: Any])
        let sealed = try await Message.encrypt(Array(body), materialsManager: manager,
                                               context: ["keyward:tenant": tenant, "keyward:purpose": "request"],
                                               suite: .aes256GCMHKDFSHA512CommitKey)
        let requestID = Hex.encode(try sealed.withUnsafeBytes { try MessageHeader.parse(prefixOf: $0).0 }.messageID)
        let base = (url ?? env["KEYWARD_URL"] ?? "http://127.0.0.1:8080").trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        var request = HTTPClientRequest(url: base + "/v1/chat/completions")
        request.method = .POST
        request.headers.add(name: "authorization", value: "Bearer \(token)")
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "content-encoding", value: "aws-esdk")
        request.headers.add(name: "accept-encoding", value: "aws-esdk")
        request.body = .bytes(ByteBuffer(bytes: sealed))
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .seconds(600))
        } catch {
            throw CLIError(exitCode: 1, description: "cannot reach the gateway at \(base)")
        }
        let answers = Answers(manager: manager, tenant: tenant, requestID: requestID)
        guard (200..<300).contains(response.status.code) else {
            // Errors come back plain, and hold no request content.
            let bytes = try await response.body.collect(upTo: 1 << 20)
            let error = ((try? JSONSerialization.jsonObject(with: Data(buffer: bytes))) as? [String: Any])?["error"] as? [String: Any]
            throw CLIError(exitCode: 1, description: "\((error?["message"] as? String) ?? "the gateway answered \(response.status.code)")"
                           + " (\((error?["code"] as? String) ?? "http_\(response.status.code)"))")
        }
        if response.headers.first(name: "keyward-event-encoding") == "aws-esdk" {
            var pending: [UInt8] = []
            var sequence = 0
            for try await chunk in response.body {
                pending += Array(buffer: chunk).filter { $0 != 13 }
                while let end = Self.eventEnd(pending) {
                    let event = Array(pending[..<end])
                    pending.removeFirst(end + 2)
                    for data in Self.dataLines(event) where data != "[DONE]" {
                        let object = try await answers.open(Array(Data(base64Encoded: data) ?? Data()), sequence: sequence)
                        sequence += 1
                        for choice in object["choices"] as? [[String: Any]] ?? [] {
                            if let delta = (choice["delta"] as? [String: Any])?["content"] as? String {
                                FileHandle.standardOutput.write(Data(delta.utf8))
                            }
                        }
                    }
                }
            }
            print()
            return
        }
        guard response.headers.first(name: "content-encoding") == "aws-esdk" else {
            throw CLIError(exitCode: 1, description: "the gateway answered in plaintext to an encrypted request")
        }
        let object = try await answers.open(Array(buffer: try await response.body.collect(upTo: 64 << 20)))
        let message = ((object["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String
        print(message ?? "")
    }

    private static func eventEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count > 1 else { return nil }
        return (0..<(bytes.count - 1)).first { bytes[$0] == 10 && bytes[$0 + 1] == 10 }
    }

    private static func dataLines(_ event: [UInt8]) -> [String] {
        String(decoding: event, as: UTF8.self).split(separator: "\n").compactMap { line in
            line.hasPrefix("data:") ? line.dropFirst(5).trimmingCharacters(in: .whitespaces) : nil
        }
    }

    /// Opens answer messages: the tenant's response context, bound to this request.
    private struct Answers {
        let manager: CachingMaterialsManager
        let tenant: String
        let requestID: String

        /// - Parameter sequence: an event's expected position in its stream (`keyward_seq`).
        func open(_ message: [UInt8], sequence: Int? = nil) async throws -> [String: Any] {
            let plaintext: [UInt8]
            do {
                plaintext = try await Message.decrypt(message, materialsManager: manager, options: DecryptionOptions(
                    requiredContext: ["keyward:tenant": tenant, "keyward:purpose": "response"])).plaintext
            } catch let e as KeywardCryptoError {
                throw CLIError(exitCode: 1, description: "the answer does not decrypt as this tenant's response: \(e.code)")
            }
            guard let object = try? JSONSerialization.jsonObject(with: Data(plaintext)) as? [String: Any],
                  object["keyward_request"] as? String == requestID else {
                throw CLIError(exitCode: 1, description: "the answer is not bound to this request")
            }
            if let sequence, object["keyward_seq"] as? Int != sequence {
                throw CLIError(exitCode: 1, description: "an event of the stream is missing, repeated or out of order")
            }
            return object
        }
    }
}
