/// The OpenAI-compatible HTTP gateway, arriving with the gateway issue.
public enum KeywardGateway {}
