import Foundation
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroTesting
import Testing

private let example = "\(repositoryRoot)/Examples/chat-app"

/// `necro run` with Docker pools, on the engine `Scripts/test` starts (`DOCKER_HOST`).
@Suite(.serialized) struct DockerRunTests {
    /// The label `necro run` marks this registry's containers with.
    private func label(_ dir: TemporaryDirectory) -> String {
        Dispatcher<ContinuousClock>.runnerMarker(registry: URL(fileURLWithPath: dir.file(".necro/registry.sqlite")).standardizedFileURL.path)
    }

    private func requireImage() throws {
        if let problem = DockerTestImage.problem {
            Issue.record("no Docker test image (is a Docker engine running? Scripts/test starts one): \(problem)")
            throw CancellationError()
        }
    }

    /// The bundled example with the mixed configuration: backend and database tasks in containers
    /// of the example agent's image, the rest as local processes; all in worktrees.
    @Test func theBundledExampleRunsWithAMixedConfigurationOfLocalAndDockerPools() async throws {
        try requireImage()
        let dir = try TemporaryDirectory("example-docker")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.file("chat-app"), withIntermediateDirectories: true)
        for file in ["tasks.md", "necro-docker.yaml", "agent.sh", "sample-repo.sh"] {
            try FileManager.default.copyItem(atPath: "\(example)/\(file)", toPath: dir.file("chat-app/\(file)"))
        }
        #expect(try await runProcessAsync("/bin/sh", ["chat-app/sample-repo.sh", "repo"], in: dir.path).status == 0)
        let image = try await runProcessAsync(
            "\(repositoryRoot)/Scripts/busybox-image.sh", ["necro-example-agent", "chat-app/agent.sh=/usr/local/bin/agent"], in: dir.path)
        #expect(image.status == 0, "\(image.stderr)")
        let result = try await NecroBinary.runAsync(["run", "chat-app/tasks.md", "--config", "chat-app/necro-docker.yaml", "--workspace", "repo"], in: dir.path)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("\nchat-app: 12 done, 2 skipped in "), "\(result.stdout)")
        #expect(result.stdout.contains("3.1  started on containers"), "a backend task ran in a container: \(result.stdout)")
        #expect(result.stdout.contains("4.1  started on local"), "\(result.stdout)")
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        let runners = try registry.runners(runningOnly: false)
        #expect(Set(runners.filter { $0.poolType == .docker }.map(\.task.id)) == ["2.1", "2.2", "3.1", "3.2", "3.3", "3.4", "5"])
        let repo = GitRepository(existing: dir.file("repo"))
        #expect(try repo.git("log", "-1", "--format=%s", "necro/chat-app/3.1") == "3.1: JWT auth", "committed inside the container")
        #expect(result.stdout.contains("every done task's work merged (11 tasks)"), "\(result.stdout)")
        #expect(try DockerTestImage.containers(label: label(dir)).isEmpty, "no container left")
    }

    /// A docker pool without a command runs its image's own entrypoint and command; a local pool
    /// without one fails its tasks, naming what is missing.
    @Test func withoutACommandADockerPoolRunsTheImagesOwnAndALocalPoolSaysWhatIsMissing() async throws {
        try requireImage()
        let dir = try TemporaryDirectory("docker-no-command")
        defer { dir.remove() }
        let made = try await runProcessAsync(
            "/bin/sh",
            [
                "-c",
                #"docker rm -f necro-test-cmd >/dev/null 2>&1; docker create --name necro-test-cmd \#(DockerTestImage.name) true >/dev/null && docker commit --change 'ENTRYPOINT ["/bin/sh", "-c"]' --change 'CMD ["echo from the image > by-image.txt"]' necro-test-cmd necro-test:own-command >/dev/null; status=$?; docker rm -f necro-test-cmd >/dev/null; exit $status"#,
            ])
        #expect(made.status == 0, "\(made.stderr)")
        try dir.write("tasks.md", "- [ ] 1. In a container\n  - _Skill: box_\n- [ ] 2. Local\n")
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {retry_max_attempts: 1}
            agent_pools:
              box: {type: docker, max_concurrency: 1, config: {image: "necro-test:own-command"}}
              local: {max_concurrency: 1}
            skill_mapping:
              box: [box]
              default: [local]
            """)
        let result = try await NecroBinary.runAsync(["run", "tasks.md", "--no-workspace"], in: dir.path)
        #expect(result.status == 1, "\(result.stdout)\n\(result.stderr)")
        #expect(try String(contentsOfFile: dir.file(".necro/work/\(dir.path.split(separator: "/").last!)/1/by-image.txt"), encoding: .utf8) == "from the image\n")
        // A local pool without a command runs `necro runner`, which needs an agent: none here.
        #expect(result.stdout.contains("pool local (necro.yaml:4) has no config.command, so it runs `necro runner`, and no agent is configured"), "\(result.stdout)")
        #expect(try DockerTestImage.containers(label: label(dir)).isEmpty)
    }

    /// kill -9 of the dispatcher, again and again, during a Docker run: the next one adopts the
    /// containers still running, takes those that ended at their exit code, removes the rest; in
    /// the end every task ran to completion once, and no container is left.
    @Test func twentyKill9sDuringAHundredTaskDockerRunLeaveEveryTaskDoneOnceAndNoContainer() async throws {
        try requireImage()
        let dir = try TemporaryDirectory("docker-chaos")
        defer { dir.remove() }
        var random = SplitMix64(seed: 15_2026)
        var lines: [String] = []
        for i in 0..<100 {
            lines.append("- [ ] \(i). Task \(i)")
            if i >= 10 { lines.append("  - _Depends: \((i / 10 - 1) * 10 + Int(random.next() % 10))_") }
        }
        try dir.write("tasks.md", lines.joined(separator: "\n") + "\n")
        // Each task's folder is its own for all its attempts: a line in `ran` is a run to the end.
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {graceful_shutdown_timeout: 1, retry_max_attempts: 3, retry_initial_delay: 0.05}
            agent_pools:
              box:
                type: docker
                max_concurrency: 8
                config:
                  image: "\(DockerTestImage.name)"
                  command: [/bin/sh, -c, 'sleep 0.1; echo done >> ran']
            """)
        for round in 0..<20 {
            let output = dir.file("run-\(round).out")
            let run = try NecroBinary.start(["run", "tasks.md", "--no-workspace", "--no-server"], in: dir.path, outputFile: output)
            // Killed at a random moment after its first container started (or it ended): mid-run,
            // however slow the machine is today.
            for _ in 0..<1_500 where run.isRunning {
                if ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").contains("started on box") { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            try await Task.sleep(for: .milliseconds(Int(random.next() % 700)))  // the kill's moment: chaos by design
            kill(run.processIdentifier, SIGKILL)
            while run.isRunning { try await Task.sleep(for: .milliseconds(10)) }
        }
        let last = try await NecroBinary.runAsync(["run", "tasks.md", "--no-workspace", "--no-server"], in: dir.path)
        #expect(last.status == 0, "\(last.stdout.suffix(2000))\n\(last.stderr)")

        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        let spec = try #require(try registry.taskSets().first?.name)
        #expect(try registry.tasks(spec: spec).allSatisfy { $0.state == .done })
        for i in 0..<100 {
            let ran = (try? String(contentsOfFile: dir.file(".necro/work/\(spec)/\(i)/ran"), encoding: .utf8)) ?? ""
            #expect(ran == "done\n", "task \(i) ran to its end exactly once: \(ran.split(separator: "\n").count) times")
        }
        let events = try registry.events(EventQuery(spec: spec))
        for (task, own) in Dictionary(grouping: events.filter { $0.taskID != nil }, by: { $0.taskID! }) {
            #expect(own.map(\.seq) == Array(1...Int64(own.count)), "gapless seq for \(task)")
            #expect(own.filter { $0.type == .taskCompleted }.count == 1, "\(task) completed once")
        }
        let dispatcherEvents = events.filter { $0.taskID == nil }.map(\.seq)
        #expect(dispatcherEvents == Array(1...Int64(dispatcherEvents.count)))
        let adopted = events.filter { $0.type == .runnerAdopted }.count
        let finishedUnseen = events.filter { $0.type == .taskCompleted && $0.payload["recovered"] == true }.count
        #expect(adopted + finishedUnseen >= 5, "the kills landed mid-run: adopted \(adopted), finished unseen \(finishedUnseen)")
        #expect(try DockerTestImage.containers(label: label(dir)).isEmpty, "no container left")
    }

    /// A runner in a container with no network reaches the dispatcher's API through the socket
    /// mounted into it, with its own token: its heartbeat is recorded. Whether the API is served
    /// on the network too or not (`--no-server`).
    @Test(arguments: [["--listen", "127.0.0.1:0"], ["--no-server"]])
    func aRunnerInAContainerReachesTheAPIThroughItsSocket(_ serving: [String]) async throws {
        try requireImage()
        let dir = try TemporaryDirectory("docker-api")
        defer { dir.remove() }
        let made = try await runProcessAsync(
            "/bin/sh", ["-c", "docker image inspect necro-test:curl >/dev/null 2>&1 || \(repositoryRoot)/Scripts/busybox-image.sh necro-test:curl /usr/bin/curl=/usr/bin/curl"])
        #expect(made.status == 0, "\(made.stderr)")
        try dir.write("tasks.md", "- [ ] 1. Reports\n")
        try dir.write(
            "necro.yaml",
            #"""
            dispatcher: {retry_max_attempts: 1}
            agent_pools:
              box:
                type: docker
                max_concurrency: 1
                config:
                  image: necro-test:curl
                  command: [/bin/sh, -c, 'curl -sSf --unix-socket "$NECRO_API_SOCKET" -X POST -H "Authorization: Bearer $NECRO_RUNNER_TOKEN" "http://localhost/v1/runners/$RUNNER_ID/heartbeat" && echo "url=$NECRO_API_URL"']
            """#)
        let result = try await NecroBinary.runAsync(["run", "tasks.md", "--no-workspace"] + serving, in: dir.path)
        let refused = try await NecroBinary.runAsync(["run", "tasks.md", "--no-workspace", "--config", "missing.yaml"], in: dir.path)
        #expect(refused.status == 2 && refused.stderr.contains("missing.yaml"), "the output is kept: \(refused.stderr)")
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        let runner = try #require(try registry.runners(runningOnly: false).first)
        #expect(runner.lastHeartbeat != nil, "the heartbeat reached the dispatcher")
        let log = (try? String(contentsOfFile: try #require(runner.logPath), encoding: .utf8)) ?? ""
        #expect(log.contains("url="), "\(log)")
        #expect(try DockerTestImage.containers(label: label(dir)).isEmpty)
    }

    /// `necro status` shows a running container as it shows a process: its pool, the container's
    /// id where a process has its pid, how long it has run, its last heartbeat.
    @Test func statusShowsARunningContainerWithItsId() async throws {
        try requireImage()
        let dir = try TemporaryDirectory("docker-status")
        defer { dir.remove() }
        try dir.write("tasks.md", "- [ ] 1. Waits\n")
        try dir.write(
            "necro.yaml",
            """
            agent_pools:
              box:
                type: docker
                max_concurrency: 1
                config:
                  image: "\(DockerTestImage.name)"
                  command: [/bin/sh, -c, 'echo up; while [ ! -e go ]; do sleep 0.05; done']
            """)
        let run = try NecroBinary.start(["run", "tasks.md", "--no-workspace", "--no-server"], in: dir.path)
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        var container: String?
        for _ in 0..<1_500 where container == nil {
            container = (try? registry.runners(runningOnly: true))?.first?.handle
            if container == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        let id = try #require(container, "the runner started, with its container's id")
        let status = try await NecroBinary.runAsync(["status"], in: dir.path)
        #expect(status.stdout.contains("  \(dir.path.split(separator: "/").last!)/1  box  container \(id.prefix(12))  "), "\(status.stdout)")
        let json = try await NecroBinary.runAsync(["status", "--json"], in: dir.path)
        #expect(json.stdout.contains(#""container_id":"\#(id)""#) && json.stdout.contains(#""pool_type":"docker""#), "\(json.stdout)")
        try dir.write(".necro/work/\(dir.path.split(separator: "/").last!)/1/go", "")
        while run.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        #expect(run.terminationStatus == 0)
        #expect(try DockerTestImage.containers(label: label(dir)).isEmpty)
    }
}

/// The runner side in containers: gates in a fresh container, `necro runner` inside one, resume
/// after the container is killed.
extension DockerRunTests {
    @Test func aDockerTasksGateRunsInAFreshContainerOfItsImageWithItsFolder() async throws {
        try requireImage()
        let dir = try TemporaryDirectory("docker-gate")
        defer { dir.remove() }
        try dir.write(
            "tasks.yaml",
            """
            spec_name: demo
            tasks:
              - {id: "1", title: Code, gates: [[sh, -c, "test -f code.txt && cat /etc/hostname"]]}
            """)
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {retry_max_attempts: 1}
            agent_pools:
              box:
                type: docker
                max_concurrency: 1
                config: {image: "\(DockerTestImage.name)", command: [sh, -c, "echo code > code.txt; cat /etc/hostname > agent-host.txt"]}
            """)
        let result = try await NecroBinary.runAsync(["run", "tasks.yaml", "--no-workspace"], in: dir.path)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let events = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite")).events(EventQuery(spec: "demo", task: "1"))
        let gate = try #require(events.first { $0.type == .gateResult })
        let agentHost = try String(contentsOfFile: dir.file(".necro/work/demo/1/agent-host.txt"), encoding: .utf8)
        #expect(gate.payload["passed"] == true)
        guard case .string(let gateHost)? = gate.payload["output_tail"] else {
            Issue.record("no gate output")
            return
        }
        #expect(!gateHost.isEmpty && gateHost != agentHost, "a container of its own, with the task's folder: \(gateHost) vs \(agentHost)")
        #expect(try DockerTestImage.containers(label: label(dir)).isEmpty, "the gate's container is removed too")
    }

    /// A pool that keeps the task's work inside its containers (`mount_repo_pool: false`): the
    /// dispatcher cannot run a gate on it, and says so rather than pass or fail it on nothing.
    @Test func aGateOfAPoolThatDoesNotMountTheTasksFolderIsNotRunOnAnEmptyFolder() async throws {
        try requireImage()
        let dir = try TemporaryDirectory("docker-gate-unmounted")
        defer { dir.remove() }
        try dir.write("tasks.yaml", "spec_name: demo\ntasks:\n  - {id: \"1\", title: Code, gates: [[\"true\"]]}\n")
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {retry_max_attempts: 1}
            agent_pools:
              box:
                type: docker
                max_concurrency: 1
                config: {image: "\(DockerTestImage.name)", command: ["true"], mount_repo_pool: false}
            """)
        let result = try await NecroBinary.runAsync(["run", "tasks.yaml", "--no-workspace"], in: dir.path)
        #expect(result.status == 1, "\(result.stdout)\n\(result.stderr)")
        let events = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite")).events(EventQuery(spec: "demo", task: "1"))
        #expect(!events.contains { $0.type == .gateStart })
        let failed = try #require(events.first { $0.type == .taskFailed })
        #expect(failed.payload["failure_reason"]?.stringValue?.contains("does not mount the task's folder (mount_repo_pool: false)") == true, "\(failed.payload)")
    }

    @Test(arguments: [false, true])
    func necroRunnerInAContainerResumesFromItsCheckpointAfterTheContainerIsKilled(_ dispatcherToo: Bool) async throws {
        try requireImage()
        if let problem = DockerTestImage.runnerImageProblem {
            Issue.record("\(problem)")
            return
        }
        let dir = try TemporaryDirectory("docker-resume")
        defer { dir.remove() }
        let repository = try GitRepository(at: dir.file("repo"))
        try dir.write("tasks.yaml", RunnerSideTests.twoFiles)
        // Attempt 1 does step 1 (checkpointed), leaves junk and hangs; attempt 2 notes what it found.
        // (One line: YAML folds a quoted scalar's line breaks; no braces: they are placeholders.)
        let agent = #"if [ "$NECRO_ATTEMPT" = 1 ]; then necro step start 1 && echo a > a.txt && necro step done 1 && echo junk > junk.txt && exec sleep 600; fi; (echo "done steps: $NECRO_DONE_STEPS"; ls) > found.txt; necro step start 2 && echo b > b.txt && necro step done 2"#
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {retry_max_attempts: 2, retry_initial_delay: 0.05}
            agent_pools:
              box:
                type: docker
                max_concurrency: 1
                config:
                  image: "\(DockerTestImage.runnerImage)"
                  command: [necro, runner, --, /bin/sh, -c, '\(agent)']
            """)
        let run = try NecroBinary.start(["run", "tasks.yaml", "--workspace", repository.path], in: dir.path, errorFile: dir.file("stderr"))
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        // Once step 1's checkpoint is recorded, the container is killed.
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        var verified = false
        for _ in 0..<600 where !verified {
            try await Task.sleep(for: .milliseconds(100))
            verified = ((try? registry.events(EventQuery(spec: "demo", task: "1", type: .checkpointVerified))) ?? []).isEmpty == false
        }
        #expect(verified, "\((try? String(contentsOfFile: dir.file("stderr"), encoding: .utf8)) ?? "")")
        let containers = try DockerTestImage.containers(label: label(dir))
        #expect(containers.count == 1)
        if dispatcherToo { kill(run.processIdentifier, SIGKILL) }
        for container in containers { _ = try await runProcessAsync("/bin/sh", ["-c", "docker kill \(container)"]) }
        await waitForExit(run)
        if dispatcherToo {
            // The next dispatcher finds the container ended, and the task goes on from its checkpoint.
            let second = try await NecroBinary.runAsync(["run", "tasks.yaml", "--workspace", repository.path], in: dir.path)
            #expect(second.status == 0, "\(second.stdout)\n\(second.stderr)")
        } else {
            #expect(run.terminationStatus == 0, "\((try? String(contentsOfFile: dir.file("stderr"), encoding: .utf8)) ?? "")")
        }
        let found = try repository.git("show", "necro/demo/1:found.txt")
        #expect(found.hasPrefix("done steps: 1\n"), "\(found)")
        #expect(found.contains("a.txt") && !found.contains("junk.txt"), "\(found)")
        let events = try registry.events(EventQuery(spec: "demo", task: "1"))
        let resumed = try #require(events.first { $0.type == .recoveryResumedFromCheckpoint })
        #expect(resumed.payload["sequence_number"] == 1 && resumed.payload["runner_id"]?.stringValue?.hasPrefix("demo.1.a2") == true)
        #expect(events.filter { $0.type == .workItemDispatched && $0.payload["work_item_id"] == "step_1" }.count == 1)
        #expect(try DockerTestImage.containers(label: label(dir)).isEmpty)
    }
}
