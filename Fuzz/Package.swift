// swift-tools-version: 6.1
// libFuzzer targets, built with the sanitizers by scripts/fuzz (not part of the main build):
//   swift build -c release --package-path Fuzz -Xswiftc -sanitize=fuzzer,address
// Each target is one LLVMFuzzerTestOneInput; libFuzzer supplies main.
import PackageDescription

let fuzz: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]

let package = Package(
    name: "keyward-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "keyward", path: "..")],
    targets: [
        .target(name: "FuzzSupport", path: "support"),
        .executableTarget(name: "fuzz-esdk-message", dependencies: ["FuzzSupport", .product(name: "KeywardCrypto", package: "keyward")],
                          path: "esdk-message", swiftSettings: fuzz),
        .executableTarget(name: "fuzz-json-scanner", dependencies: ["FuzzSupport", .product(name: "KeywardJSON", package: "keyward")],
                          path: "json-scanner", swiftSettings: fuzz),
    ]
)
