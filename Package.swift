// swift-tools-version:6.0
import PackageDescription

// Swift 6 language mode (the tools version), plus: no warnings in our own code.
let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .unsafeFlags(["-warnings-as-errors"]),
]

let package = Package(
    name: "necro",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "necro", targets: ["necro"]),
        .library(name: "NecroCore", targets: ["NecroCore"]),
        .library(name: "NecroRegistry", targets: ["NecroRegistry"]),
        .library(name: "NecroServer", targets: ["NecroServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        .target(
            name: "NecroCore",
            dependencies: [.product(name: "Collections", package: "swift-collections")],
            swiftSettings: strict
        ),
        .target(
            name: "NecroRegistry",
            dependencies: [
                "NecroCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        .target(name: "CNecroSystem", linkerSettings: [.linkedLibrary("crypto")]),
        .target(
            name: "NecroRunners",
            dependencies: ["NecroCore", "CNecroSystem"],
            swiftSettings: strict
        ),
        .target(
            name: "NecroDocker",
            dependencies: [
                "NecroCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "NecroWorkspaces",
            dependencies: ["NecroCore", "NecroRunners"],
            swiftSettings: strict
        ),
        .target(
            name: "NecroDispatcher",
            dependencies: [
                "NecroCore", "NecroRegistry", "NecroRunners", .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "NecroServer",
            dependencies: [
                "NecroCore",
                "NecroRegistry",
                "NecroDispatcher",
                "NecroRunners",
                "CNecroSystem",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "NecroCLI",
            dependencies: [
                "NecroCore",
                "NecroRegistry",
                "NecroRunners",
                "NecroDispatcher",
                "NecroWorkspaces",
                "NecroServer",
                "NecroDocker",
                "CNecroSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "necro", dependencies: ["NecroCLI"], swiftSettings: strict),
        .target(name: "NecroTesting", dependencies: ["NecroCore"], path: "Tests/NecroTesting", swiftSettings: strict),
        .testTarget(name: "NecroCoreTests", dependencies: ["NecroCore", "NecroTesting"], swiftSettings: strict),
        .testTarget(
            name: "NecroRegistryTests",
            dependencies: ["NecroRegistry", "NecroTesting"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NecroRunnersTests",
            dependencies: ["NecroRunners", "NecroTesting"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NecroDockerTests",
            dependencies: ["NecroDocker", "NecroRunners", "NecroDispatcher", "NecroRegistry", "NecroWorkspaces", "NecroTesting"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NecroWorkspacesTests",
            dependencies: ["NecroWorkspaces", "NecroTesting"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NecroDispatcherTests",
            dependencies: [
                "NecroDispatcher", "NecroWorkspaces", "NecroTesting", .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NecroServerTests",
            dependencies: [
                "NecroServer", "NecroTesting", "NecroRunners", "NecroDispatcher", "NecroRegistry",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "NecroCLITests",
            dependencies: ["NecroCLI", "NecroRegistry", "NecroRunners", "necro", "NecroTesting"],
            exclude: ["Browser"],
            swiftSettings: strict
        ),
    ]
)
