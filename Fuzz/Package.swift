// swift-tools-version: 6.1
// libFuzzer targets, built with the sanitizers by scripts/fuzz (not part of the main build):
//   swift build -c release --package-path Fuzz -Xswiftc -sanitize=fuzzer,address
// Each target is one LLVMFuzzerTestOneInput; libFuzzer supplies main.
import PackageDescription

let fuzz: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]
let gateway = Target.Dependency.product(name: "KeywardGateway", package: "keyward")
let keyStores = Target.Dependency.product(name: "KeywardKeyStores", package: "keyward")

let package = Package(
    name: "keyward-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "keyward", path: ".."), .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2")],
    targets: [
        .target(name: "FuzzSupport", path: "support"),
        .executableTarget(name: "fuzz-esdk-message", dependencies: ["FuzzSupport", .product(name: "KeywardCrypto", package: "keyward")],
                          path: "esdk-message", swiftSettings: fuzz),
        .executableTarget(name: "fuzz-json-scanner", dependencies: ["FuzzSupport", .product(name: "KeywardJSON", package: "keyward")],
                          path: "json-scanner", swiftSettings: fuzz),
        .executableTarget(name: "fuzz-request-head", dependencies: ["FuzzSupport", gateway], path: "request-head", swiftSettings: fuzz),
        .executableTarget(name: "fuzz-sse-splitter", dependencies: ["FuzzSupport", gateway], path: "sse-splitter", swiftSettings: fuzz),
        .executableTarget(name: "fuzz-multipart", dependencies: ["FuzzSupport", gateway, .product(name: "NIOCore", package: "swift-nio")],
                          path: "multipart", swiftSettings: fuzz),
        .executableTarget(name: "fuzz-record-metadata", dependencies: ["FuzzSupport", .product(name: "KeywardStorage", package: "keyward")],
                          path: "record-metadata", swiftSettings: fuzz),
        .executableTarget(name: "fuzz-key-references", dependencies: ["FuzzSupport", keyStores, .product(name: "KeywardCrypto", package: "keyward")],
                          path: "key-references", swiftSettings: fuzz),
        .executableTarget(name: "fuzz-kmip-ttlv", dependencies: ["FuzzSupport", keyStores], path: "kmip-ttlv", swiftSettings: fuzz),
    ]
)
