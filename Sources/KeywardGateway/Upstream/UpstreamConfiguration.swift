import KeywardCrypto
import KeywardHTTP

/// One model provider the gateway forwards to.
public struct UpstreamConfiguration: Sendable {
    public enum Kind: String, Sendable, Codable {
        /// OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp server: `{url}/chat/completions` etc.
        case openAICompatible = "openai-compatible"
        /// Anthropic's Messages API: `{url}/v1/messages`.
        case anthropic
    }

    /// Which OpenAI API an `openai-compatible` upstream speaks for Responses requests.
    public enum API: String, Sendable {
        /// Chat completions only (vLLM, Ollama, most self-hosted servers): the default.
        case chat
        /// OpenAI's Responses API (`{url}/responses`), called statelessly (`store: false`).
        case responses
    }

    public var name: String
    public var kind: Kind
    public var api: API
    /// For `openai-compatible`, the base URL including `/v1`; for `anthropic`, without it.
    public var url: String
    public var apiKey: Secret?
    /// Model names this upstream serves; a trailing `*` matches a prefix, `*` alone everything.
    public var models: [String]
    /// The longest wait for the response head, and the longest pause while a body streams.
    public var timeoutSeconds: Double
    /// Where requests go, parsed once (with the TLS context of an https URL).
    public let endpoint: HTTPEndpoint

    /// - Parameter caFile: PEM certificates trusted for an https `url` besides the system's roots.
    /// - Throws: ``GatewayError`` (`invalid_configuration`) for a URL that is not http(s) or a CA
    ///   file that does not load.
    public init(name: String, kind: Kind, url: String, apiKey: Secret?, models: [String], timeoutSeconds: Double = 600,
                caFile: String? = nil, api: API = .chat) throws {
        self.name = name
        self.kind = kind
        self.api = api
        self.url = url.hasSuffix("/") ? String(url.dropLast()) : url
        self.apiKey = apiKey
        self.models = models
        self.timeoutSeconds = timeoutSeconds
        do { endpoint = try HTTPEndpoint(url: self.url, caFile: caFile) } catch let e as HTTPClientError {
            throw GatewayError.config("upstream \(name): \(e.reason)")
        }
    }

    func serves(_ model: String) -> Bool {
        models.contains { pattern in
            pattern.hasSuffix("*") ? model.hasPrefix(pattern.dropLast()) : model == pattern
        }
    }
}
