import AsyncHTTPClient
import Foundation
import KeywardCrypto
import KeywardKeyStores
import NIOCore

/// Unwraps per second through the Vault Transit and KMIP stores against real servers (the
/// environment names them: VAULT_ADDR and VAULT_TOKEN; KEYWARD_KMIP_*), one call at a time over kept
/// connections, and what each client adds to a call beyond the bare round trip, the two measured in
/// alternating rounds so that drift affects both alike.
func remoteUnwrap(_ n: Int) async throws {
    let env = ProcessInfo.processInfo.environment
    let context: EncryptionContext = ["keyward:tenant": "bench", "keyward:record": "r-1", "keyward:kind": "prompt"]
    if env["VAULT_ADDR"] != nil {
        let store = try VaultTransitKeyStore.fromEnvironment()
        let name = "bench-\(UInt32.random(in: 0...UInt32.max))"
        _ = try await store.createKey(name: name)
        let (_, wrapped) = try await store.generateDataKey(keyID: name, length: 32, context: context)
        let body = try JSONSerialization.data(withJSONObject: [
            "ciphertext": String(decoding: wrapped.ciphertext, as: UTF8.self),
            "associated_data": Data(try context.serialized()).base64EncodedString(),
        ])
        let url = "\(store.client.configuration.address)/v1/transit/decrypt/\(name)"
        let token = env["VAULT_TOKEN"] ?? ""
        try await compare("vault-transit", n,
            raw: {
                var request = HTTPClientRequest(url: url)
                request.method = .POST
                request.headers.add(name: "X-Vault-Token", value: token)
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: body))
                let r = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
                _ = try await r.body.collect(upTo: 1 << 20)
            },
            ours: { _ = try await store.decrypt(keyID: name, ciphertext: wrapped.ciphertext, context: context) },
            roundTripsPerUnwrap: 1)
    } else {
        print("vault-transit: skipped (VAULT_ADDR is not set)")
    }
    if env["KEYWARD_KMIP_SERVER"] != nil {
        let store = try KMIPKeyStore.fromEnvironment()
        let keyID = "name=bench-\(UInt32.random(in: 0...UInt32.max))"
        _ = try await store.createKey(name: keyID)
        let (_, wrapped) = try await store.generateDataKey(keyID: keyID, length: 32, context: context)
        // An unwrap reads the key's state and names (Get Attributes), then decrypts: the bare
        // exchange sends the same two requests, already encoded, and reads nothing of the answers.
        let requests = try KMIPKeyStore.unwrapRequests(wrapped.ciphertext, context: context)
        try await compare("kmip", n,
            raw: { for r in requests { _ = try await store.client.roundTrip(r) } },
            ours: { _ = try await store.decrypt(keyID: keyID, ciphertext: wrapped.ciphertext, context: context) },
            roundTripsPerUnwrap: 2)
    } else {
        print("kmip: skipped (KEYWARD_KMIP_SERVER is not set)")
    }
}

private func compare(_ label: String, _ n: Int, raw: () async throws -> Void, ours: () async throws -> Void,
                     roundTripsPerUnwrap: Int) async throws {
    for _ in 0..<min(200, n) { try await raw(); try await ours() }
    let clock = ContinuousClock()
    var rawTotal = Duration.zero, oursTotal = Duration.zero, rawCPU = 0.0, oursCPU = 0.0
    let rounds = 10, perRound = max(n / rounds, 1)
    for _ in 0..<rounds {
        var c0 = cpuSeconds()
        rawTotal += try await clock.measure { for _ in 0..<perRound { try await raw() } }
        rawCPU += cpuSeconds() - c0
        c0 = cpuSeconds()
        oursTotal += try await clock.measure { for _ in 0..<perRound { try await ours() } }
        oursCPU += cpuSeconds() - c0
    }
    // The server is another process: this process's CPU time is the client's own.
    let calls = Double(rounds * perRound)
    let rawMean = seconds(rawTotal) / calls * 1e3, oursMean = seconds(oursTotal) / calls * 1e3
    print(String(format: "%@: %.0f unwraps per second (%.3f ms each, %d round trip%@ to the server)", label,
                 1e3 / oursMean, oursMean, roundTripsPerUnwrap, roundTripsPerUnwrap == 1 ? "" : "s"))
    print(String(format: "  the same request%@ sent bare: %.3f ms; added by the client: %.3f ms per unwrap (client CPU %.0f µs against %.0f µs bare)",
                 roundTripsPerUnwrap == 1 ? "" : "s", rawMean, oursMean - rawMean, oursCPU / calls * 1e6, rawCPU / calls * 1e6))
}
