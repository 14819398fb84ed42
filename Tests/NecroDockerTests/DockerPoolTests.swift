import Foundation
import NecroCore
import NecroDispatcher
import NecroDocker
import NecroRegistry
import NecroRunners
import NecroTesting
import NecroWorkspaces
import Testing

@Suite(.serialized) struct DockerPoolTests {
    @Test func theAPIVersionIsAgreedWithTheEngineAndItsErrorsAreShownWithItsMessage() async throws {
        let engine = try await TestDocker.engine()
        defer { Task { await engine.shutdown() } }
        #expect(!engine.engineVersion.isEmpty)
        await #expect(throws: DockerError.self) { try await engine.start("no-such-container") }
        do {
            try await engine.start("no-such-container")
        } catch {
            #expect(error.status == 404 && error.message.contains("no-such-container"), "the engine's own message: \(error.message)")
        }
        #expect(try await engine.hasImage(TestDocker.image))
        #expect(try await !engine.hasImage("necro-test:absent"))
    }

    /// Run as a non-root user (CI runs as root): what the container writes in its folder is that
    /// user's; and it does not see the registry (of the registry's folder, only the path down to
    /// its own folder is there), and has a home it can write.
    @Test func filesWrittenBelongToTheConfiguredUserAndTheRegistryIsNotVisible() async throws {
        var settings = ContainerSettings(image: TestDocker.image)
        settings.user = "4321:4321"
        let rig = try await Rig.make(.docker, pool: ["p": settings])
        var configuration = rig.configuration(
            #"id -u > mine; [ -e "$REGISTRY" ] && exit 9; [ "$(ls "$REGISTRY_FOLDER")" = work ] || exit 10; [ -w "$HOME" ] || exit 8; exit 0"#,
            environment: ["REGISTRY": rig.registry.path, "REGISTRY_FOLDER": rig.dir.file(".necro")])
        configuration.pools[0].container = settings
        let outcome = try await rig.run(independent(1), configuration)
        let finished = try rig.events(.runnerFinished).map(\.payload)
        #expect(outcome.succeeded, "\(finished)")
        let file = rig.paths.workFolder(for: TaskKey(spec: "s", id: "1")) + "/mine"
        let attributes = try FileManager.default.attributesOfItem(atPath: file)
        #expect((attributes[.ownerAccountID] as? NSNumber)?.intValue == 4321)
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "4321\n")
        try await rig.finish()
    }

    @Test func aContainerOverItsMemoryLimitIsReportedOutOfMemory() async throws {
        let rig = try await Rig.make(.docker)
        // Task 2's agent goes on after its child's OOM kill, and succeeds: not an OOM failure.
        let outcome = try await rig.run(
            independent(2),
            rig.configuration(
                #"[ "$NECRO_TASK_ID" = 1 ] && exec dd if=/dev/zero of=/dev/null bs=200M count=1; dd if=/dev/zero of=/dev/null bs=200M count=1; exit 0"#,
                resources: TaskResources(memoryMB: 32)))
        #expect(!outcome.succeeded)
        let finished = try #require(try rig.events(.runnerFinished).first { $0.taskID == "1" })
        #expect(finished.payload["failure_reason"] == "out of memory (limit 32 MB)", "\(finished.payload)")
        #expect(finished.payload["out_of_memory"] == true)
        #expect(try rig.registry.tasks(spec: "s").first { $0.task.id == "2" }?.state == .done)
        try await rig.finish()
    }

    /// A missing image fails the attempt with a message naming it; the task is retried no more
    /// than its attempts allow.
    @Test func aMissingImageFailsTheAttemptNamingTheImage() async throws {
        let rig = try await Rig.make(.docker, pool: ["p": ContainerSettings(image: "necro-test:absent")])
        var configuration = rig.configuration("true", attempts: 2)
        configuration.pools[0].container = ContainerSettings(image: "necro-test:absent")
        let outcome = try await rig.run(independent(1), configuration)
        #expect(!outcome.succeeded)
        let finished = try rig.events(.runnerFinished)
        #expect(finished.count == 2)
        let reason = finished.first?.payload["failure_reason"]?.stringValue ?? ""
        #expect(reason.contains("image necro-test:absent is not on the Docker engine"), "\(reason)")
        #expect(try rig.registry.tasks(spec: "s").first?.state == .failed)
        try await rig.finish()
    }

    /// Docker cuts output into frames of 16 KB at most: a longer line arrives whole.
    @Test func aLineLongerThanDockersFramesArrivesWhole() async throws {
        let rig = try await Rig.make(.docker)
        let outcome = try await rig.run(
            independent(1), rig.configuration("printf 'a%.0s' $(seq 1 40000); echo; echo after"))
        #expect(outcome.succeeded)
        let runner = try #require(try rig.registry.runners(runningOnly: false).first)
        let log = try String(contentsOfFile: rig.paths.logFile(for: runner.id), encoding: .utf8)
        #expect(log == String(repeating: "a", count: 40_000) + "\nafter\n")
        #expect(runner.handle?.count == 64, "the container's id is the runner's handle: \(runner.handle ?? "none")")
        #expect(runner.poolType == .docker)
        try await rig.finish()
    }

    /// The container works in the task's worktree, at its host path, and commits on its branch.
    @Test func theContainerWorksInItsWorktreeAndCommitsOnItsBranch() async throws {
        let rig = try await Rig.make(.docker)
        let repo = try GitRepository(at: rig.dir.file("repo"))
        var configuration = rig.configuration(
            #"[ "$PWD" = "$(echo "$TASK_CONTEXT" | sed 's/.*"path":"\([^"]*\)".*/\1/')" ] || exit 7; echo "from the container" > made.txt && git add made.txt && git -c user.name=agent -c user.email=agent@localhost commit -qm "agent work""#)
        configuration.repoPool = RepoPoolConfiguration(repository: repo.path)
        let pool = try RepoPool(configuration.repoPool!, slotCount: 1, defaultSlotsDirectory: rig.dir.file(".necro/slots"))
        configuration.repoPool?.slotsDirectory = pool.slotsDirectory
        let spec = independent(1)
        try rig.registry.importTaskSet(spec, source: nil)
        let dispatcher = Dispatcher(
            configuration: configuration, registry: rig.registry, launchers: [rig.launcher], clock: ContinuousClock(), paths: rig.paths,
            workspaces: pool)
        let outcome = try await dispatcher.run([(spec, try rig.registry.tasks(spec: "s"))])
        let finished = try rig.events(.runnerFinished).map(\.payload)
        #expect(outcome.succeeded, "\(finished)")
        let branch = pool.branches(spec: "s", tasks: ["1"]).first?.branch ?? "necro/s/1"
        #expect(try repo.git("log", "--format=%s", branch).contains("agent work"))
        #expect(try repo.git("show", "\(branch):made.txt") == "from the container")
        try await rig.finish()
    }
}

@Suite(.serialized) struct DockerAdoptionTests {
    /// A container a previous dispatcher left: adopted while it runs (its later output seen, its
    /// exit code taken from the engine), or, stopped meanwhile, taken at its exit code at once.
    @Test func containersLeftRunningOrStoppedAreAdoptedAndTheirExitReported() async throws {
        let engine = try await TestDocker.engine()
        let dir = try TemporaryDirectory("adopt")
        defer { dir.remove() }
        let launcher = DockerLauncher(engine: engine, pools: [:], registryLabel: "adopt-\(getpid())", outputInterval: .zero)
        defer { Task { await launcher.shutdown() } }
        var events = launcher.events.makeAsyncIterator()
        func container(_ script: String) async throws -> String {
            let id = try await engine.createContainer([
                "Image": TestDocker.image, "Cmd": ["/bin/sh", "-c", script], "Labels": ["necro.registry": "adopt-\(getpid())"],
                "HostConfig": ["Binds": ["\(dir.path):/shared"]],
            ])
            try await engine.start(id)
            return id
        }
        // It goes on once adopted: its later output must be seen.
        let running = try await container("while [ ! -e /shared/go ]; do echo tick; sleep 0.05; done; echo late; exit 4")
        let stopped = try await container("echo one; echo two; exit 5")
        _ = try await engine.wait(stopped)
        // The earlier dispatcher had written its first line to the log; the rest came while none watched.
        _ = try dir.write("stopped.log", "one\n")
        launcher.adopt(RunnerAdoption(runner: RunnerID("running"), handle: RunnerHandle(running), logPath: dir.file("running.log")))
        launcher.adopt(RunnerAdoption(runner: RunnerID("stopped"), handle: RunnerHandle(stopped), logPath: dir.file("stopped.log")))
        var exits: [RunnerID: RunnerExit] = [:]
        var lines: [String] = []
        let started = ContinuousClock.now
        while exits.count < 2, ContinuousClock.now - started < .seconds(30), let event = await events.next() {
            if case .exited(let id, let exit) = event { exits[id] = exit }
            if case .output(_, let line) = event {
                // Its output reaches the launcher: from now on nothing it prints is missed.
                if lines.isEmpty { _ = try dir.write("go", "") }
                lines.append(line)
            }
        }
        #expect(exits == [RunnerID("running"): .exited(code: 4), RunnerID("stopped"): .exited(code: 5)])
        #expect(lines.contains("late"), "output after the adoption is followed")
        #expect(try String(contentsOfFile: dir.file("running.log"), encoding: .utf8).hasSuffix("tick\nlate\n"))
        #expect(try String(contentsOfFile: dir.file("stopped.log"), encoding: .utf8) == "one\ntwo\n", "nothing twice, nothing lost")
        // Kept until their ends are recorded; then removed.
        #expect(try await TestDocker.containers(engine, label: "adopt-\(getpid())").count == 2)
        launcher.ended(RunnerID("running"))
        launcher.ended(RunnerID("stopped"))
        await launcher.shutdown()
        #expect(try await TestDocker.containers(engine, label: "adopt-\(getpid())").isEmpty)
    }
}

@Suite struct ContainerConfigurationTests {
    /// What a container is made with: its labels, mounts (the task's folder and the shared paths
    /// at their own paths, the runner socket read-only, a portable `necro` if there is one), limits,
    /// and no capabilities.
    @Test func aContainerIsMadeWithItsLabelsMountsLimitsAndNoPrivileges() async throws {
        let engine = try await TestDocker.engine()
        let dir = try TemporaryDirectory("body")
        defer { dir.remove() }
        var settings = ContainerSettings(image: "agent:1")
        settings.pidsLimit = 64
        let launcher = DockerLauncher(engine: engine, pools: ["p": settings], registryLabel: "r1", necroBinary: "/opt/necro-static")
        let launch = RunnerLaunch(
            runner: RunnerID("s.1.a2"), argv: ["claude", "-p", "Title"], environment: ["A": "1"], workingDirectory: dir.file("work"),
            logPath: dir.file("log"), task: TaskKey(spec: "s", id: "1"), attempt: 2, pool: "p",
            resources: TaskResources(cpu: 1.5, memoryMB: 512), sharedPaths: [dir.file("repo/.git")])
        let body = launcher.containerBody(launch, settings)
        #expect(body["Entrypoint"] as? [String] == ["claude"] && body["Cmd"] as? [String] == ["-p", "Title"])
        #expect(body["WorkingDir"] as? String == dir.file("work"))
        #expect(body["User"] as? String == "\(getuid()):\(getgid())")
        #expect((body["Env"] as? [String])?.contains("A=1") == true && (body["Env"] as? [String])?.contains("HOME=/tmp/necro-home") == true)
        #expect(body["Labels"] as? [String: String] == [
            "necro.registry": "r1", "necro.runner-id": "s.1.a2", "necro.spec": "s", "necro.task": "1", "necro.attempt": "2", "necro.pool": "p",
        ])
        let host = try #require(body["HostConfig"] as? [String: Any])
        #expect(host["Binds"] as? [String] == [
            "\(dir.file("work")):\(dir.file("work"))", "\(dir.file("repo/.git")):\(dir.file("repo/.git"))", "/opt/necro-static:/usr/local/bin/necro:ro",
        ])
        #expect(host["NetworkMode"] as? String == "none" && host["Init"] as? Bool == true)
        #expect(host["CapDrop"] as? [String] == ["ALL"] && host["SecurityOpt"] as? [String] == ["no-new-privileges"])
        #expect(host["Memory"] as? Int == 512 << 20 && host["NanoCpus"] as? Int64 == 1_500_000_000 && host["PidsLimit"] as? Int == 64)
        // The runner API's socket: its folder, read-only (a restarted dispatcher's new socket is
        // the one an adopted container reaches); with mount_repo_pool false, no worktree nor .git.
        let socketFolder = dir.file("sock")
        try FileManager.default.createDirectory(atPath: socketFolder, withIntermediateDirectories: true)
        let socket = socketFolder + "/api.sock"
        let fd = socket_listen(socket)
        defer { close(fd) }
        var isolated = settings
        isolated.mountRepoPool = false
        var withSocket = launch
        withSocket.sharedPaths.append(socket)
        let isolatedHost = try #require(launcher.containerBody(withSocket, isolated)["HostConfig"] as? [String: Any])
        #expect(isolatedHost["Binds"] as? [String] == ["\(socketFolder):\(socketFolder):ro", "/opt/necro-static:/usr/local/bin/necro:ro"])
        #expect((isolatedHost["Tmpfs"] as? [String: String])?[dir.file("work")] == "mode=1777", "an empty folder of its own")
        // This test process runs on the toolchain's Swift runtime: not a binary for containers.
        #expect(DockerLauncher.portableExecutable() == nil)
        await launcher.shutdown()
    }
}

/// A unix socket listening at `path` (for what a container is given of it).
private func socket_listen(_ path: String) -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (index, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[index] = byte }
    }
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
    listen(fd, 1)
    return fd
}

@Suite struct RecoverySortOutTests {
    /// Runners of a pool type no launcher here can look at are not taken as ended (their tasks
    /// would run again while they may still run): the dispatcher refuses to start, saying why.
    @Test func runnersLeftOfATypeWithoutALauncherStopTheStart() async throws {
        let dir = try TemporaryDirectory("sortout")
        defer { dir.remove() }
        let registry = try SQLiteRegistry(path: dir.file("registry.sqlite"))
        try registry.importTaskSet(TaskSetSpec(name: "s", tasks: [TaskSpec(id: "1", title: "One")]), source: nil)
        try registry.saveRunner(
            RunnerRecord(
                id: RunnerID("s.1.a1"), task: TaskKey(spec: "s", id: "1"), attempt: 1, pool: "box", startedAt: Timestamp(secondsSince1970: 0),
                poolType: .docker, handle: "abc"))
        let local = LocalProcessLauncher()
        defer { local.shutdown() }
        await #expect(throws: RecoveryError.self) { try await Dispatcher<ContinuousClock>.sortOut(["s"], in: registry, launchers: [local]) }
        #expect(try registry.runners(runningOnly: true).map(\.handle) == ["abc"], "left as it was")
    }
}

@Suite struct RunnerContractTests {
    /// A container gets only what its pool names of the dispatcher's environment (`env_from_host`),
    /// its pool's `env` and the contract's variables, which nothing overrides; a local process gets
    /// the dispatcher's environment besides. Never the registry's path nor an admin token.
    @Test func aContainersEnvironmentIsTheContractItsPoolsEnvAndTheNamedHostVariablesOnly() {
        var settings = ContainerSettings(image: "agent:1")
        settings.environmentFromHost = ["API_KEY", "NOT_SET"]
        let docker = PoolConfiguration(
            name: "box", type: .docker, limits: PoolLimits(name: "box", maxConcurrency: 1), command: CommandTemplate(["agent", "{task.id}"]),
            environment: ["MODE": "ci", "RUNNER_ID": "spoofed"], container: settings)
        let request = LaunchRequest(
            runner: RunnerID("s.7.a1"), task: TaskKey(spec: "s", id: "7"), spec: TaskSpec(id: "7", title: "Seven"), attempt: 1, pool: "box",
            dependencies: [])
        let host = ["PATH": "/host/bin", "API_KEY": "k-123", "NECRO_REGISTRY": "/r.sqlite", "NECRO_ADMIN_TOKEN": "admin", "HOME": "/root"]
        let contract = RunnerContract(request: request, pool: docker, work: "/w/s/7", api: nil, checkpoint: nil)
        let environment = contract.environment(base: host)
        #expect(environment["API_KEY"] == "k-123" && environment["MODE"] == "ci")
        #expect(environment["PATH"] == nil && environment["HOME"] == nil && environment["NOT_SET"] == nil, "nothing else of the host")
        #expect(environment["NECRO_REGISTRY"] == nil && environment["NECRO_ADMIN_TOKEN"] == nil)
        #expect(environment["RUNNER_ID"] == "s.7.a1" && environment["NECRO_TASK_ID"] == "7" && environment["POOL_NAME"] == "box")
        #expect(environment["TASK_CONTEXT"]?.contains(#""path":"/w/s/7""#) == true)
        #expect(contract.argv == ["agent", "7"])

        var local = docker
        local.type = .localProcess
        local.container = nil
        let localEnvironment = RunnerContract(request: request, pool: local, work: "/w/s/7", api: nil, checkpoint: nil).environment(base: host)
        #expect(localEnvironment["PATH"] == "/host/bin" && localEnvironment["NECRO_REGISTRY"] == nil && localEnvironment["NECRO_ADMIN_TOKEN"] == nil)
    }
}
