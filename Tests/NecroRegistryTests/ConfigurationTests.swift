import Foundation
import NecroCore
import NecroTesting
import Testing

@testable import NecroRegistry

private func issues(_ text: String) -> [SpecIssue] {
    do {
        _ = try ConfigurationLoader.load(text: text, file: "necro.yaml")
        return []
    } catch {
        return error.issues
    }
}

@Suite struct ConfigurationTests {
    @Test func readsTheDesignDocumentsFormat() throws {
        let configuration = try ConfigurationLoader.load(
            text: """
                dispatcher:
                  poll_interval: 5            # accepted, unused: nothing polls
                  scheduling_policy: fair-share
                  max_global_concurrency: 10
                  heartbeat_timeout: 90
                  retry_max_attempts: 4
                  retry_backoff_base: 3.0
                  retry_initial_delay: 2s
                  retry_max_delay: 5m
                  graceful_shutdown_timeout: 120
                agent_pools:
                  local:
                    type: local-process
                    max_concurrency: 2
                    cpu_quota: 4
                    memory_quota: 8192
                    config:
                      command: [claude, -p, "Do task {task.id}: {task.title}", --cwd, "{slot.path}"]
                      env: {AGENT_MODE: batch}
                      nice: 5
                  gpu:
                    type: local-process
                    max_concurrency: 1
                    enabled: false
                    default_resources: {cpu: 2, memory_mb: 4096}
                    config: {command: [./train.sh]}
                skill_mapping:
                  ml: [gpu, local]
                  default: [local]
                """, file: "necro.yaml")
        #expect(configuration.schedulingPolicy == .fairShare)
        #expect(configuration.maxGlobalConcurrency == 10)
        #expect(configuration.heartbeatTimeout == .seconds(90))
        #expect(configuration.retry == RetryPolicy(maxAttempts: 4, initialDelay: .seconds(2), base: 3, maxDelay: .seconds(300)))
        #expect(configuration.gracefulShutdownTimeout == .seconds(120))
        #expect(configuration.pools.map(\.name) == ["local", "gpu"])
        let local = try #require(configuration.pool(named: "local"))
        #expect(local.limits == PoolLimits(name: "local", maxConcurrency: 2, cpuQuota: 4, memoryQuotaMB: 8192))
        #expect(local.environment == ["AGENT_MODE": "batch"])
        #expect(local.nice == 5)
        #expect(
            local.command.render(["task.id": "1.2", "task.title": "x; rm -rf /", "slot.path": "/s/1"])
                == ["claude", "-p", "Do task 1.2: x; rm -rf /", "--cwd", "/s/1"])
        let gpu = try #require(configuration.pool(named: "gpu"))
        #expect(!gpu.limits.enabled)
        #expect(gpu.limits.defaultResources == TaskResources(cpu: 2, memoryMB: 4096))
        #expect(configuration.skillMapping == ["ml": ["gpu", "local"], "default": ["local"]])
    }

    @Test func defaultsFillWhatIsLeftOut() throws {
        let configuration = try ConfigurationLoader.load(
            text: "agent_pools:\n  local:\n    max_concurrency: 3\n    config: {command: [/bin/true]}\n", file: "n.yaml")
        #expect(configuration.schedulingPolicy == .priority)
        #expect(configuration.heartbeatTimeout == .seconds(60))
        #expect(configuration.gracefulShutdownTimeout == .seconds(300))
        #expect(configuration.retry.maxAttempts == 3)
        #expect(configuration.pools.first?.type == .localProcess)
        #expect(configuration.pools.first?.nice == 0)
    }

    @Test func eachMistakeIsNamedWithItsKeyAndLine() {
        let found = issues(
            """
            dispatcher:
              scheduling_policy: random
              max_global_concurrency: 0
              heartbeat_timout: 60
              retry_max_attempts: three
            agent_pools:
              local:
                type: local-process
                max_concurrency: -1
                config:
                  command: [agent, "{task.name}"]
                  nice: 20
              remote:
                type: docker
                max_concurrency: 2
              k8s:
                type: kubernetes
                max_concurrency: 2
            skill_mapping:
              backend: [local, cloud]
            """)
        func at(_ field: String) -> SpecIssue? { found.first { $0.location.field == field } }
        #expect(at("dispatcher.scheduling_policy")?.location.line == 2)
        #expect(at("dispatcher.scheduling_policy")?.message.contains("unknown scheduling policy random") == true)
        #expect(at("dispatcher.max_global_concurrency")?.message == "dispatcher.max_global_concurrency must be an integer from 1 to 1000000, found 0")
        #expect(at("dispatcher.heartbeat_timout")?.code == .unknownField)
        #expect(at("dispatcher.heartbeat_timout")?.location.line == 4)
        #expect(at("dispatcher.retry_max_attempts")?.code == .wrongType)
        #expect(at("agent_pools.local.max_concurrency")?.location.line == 9)
        #expect(at("agent_pools.local.config.command")?.message.hasPrefix("unknown placeholder {task.name}") == true)
        #expect(at("agent_pools.local.config.nice")?.message == "agent_pools.local.config.nice must be 0 to 19 (added to the dispatcher's own niceness), found 20")
        #expect(at("agent_pools.local.config.nice")?.location.line == 12)
        #expect(at("agent_pools.remote.config.image")?.message == "docker pool remote needs config.image, the image its containers are made from")
        #expect(at("agent_pools.remote.config.image")?.location.line == 14)
        #expect(at("agent_pools.k8s.type")?.location.line == 17)
        #expect(at("agent_pools.k8s.type")?.message.hasPrefix("pool type kubernetes is not supported yet") == true)
        #expect(at("skill_mapping.backend[1]")?.message == "skill backend maps to pool cloud, which is not configured under agent_pools")
        #expect(at("skill_mapping.backend[1]")?.location.line == 20)
        #expect(found.map { $0.location.line ?? 0 } == found.map { $0.location.line ?? 0 }.sorted())
    }

    @Test func theRepoPoolSectionIsReadWithItsPathsBesideTheFileAndItsMistakesNamed() throws {
        let dir = try TemporaryDirectory("repo-pool-config")
        defer { dir.remove() }
        let file = try dir.write(
            "conf/necro.yaml",
            """
            agent_pools:
              local: {max_concurrency: 2, config: {command: [agent]}}
            repo_pool:
              repo: ../project
              base_ref: develop
              slots_dir: /var/slots
              max_slots: 3
              branch_template: "agents/{spec}/{task.id}"
            """)
        let repoPool = try #require(try ConfigurationLoader.load(path: file).repoPool)
        #expect(repoPool.repository == dir.file("project"), "relative to the configuration file")
        #expect(repoPool.baseRef == "develop" && repoPool.slotsDirectory == "/var/slots" && repoPool.maxSlots == 3)
        #expect(repoPool.branchTemplate.render(spec: "app", task: "1.1") == "agents/app/1.1")
        let defaults = try #require(try ConfigurationLoader.load(text: "agent_pools:\n  l: {max_concurrency: 1, config: {command: [a]}}\nrepo_pool: {repo: /r}\n", file: "n.yaml").repoPool)
        #expect(defaults == RepoPoolConfiguration(repository: "/r"))
        #expect(defaults.branchTemplate.text == "necro/{spec}/{task.id}")

        let found = issues(
            """
            agent_pools:
              local: {max_concurrency: 2, config: {command: [agent]}}
            repo_pool:
              base_ref: main
              max_slots: 0
              branch_template: "agents/{spec}"
              worktrees: 4
            """)
        func at(_ field: String) -> SpecIssue? { found.first { $0.location.field == field } }
        #expect(at("repo_pool.repo")?.message == "repo_pool needs repo, the path of a local git repository")
        #expect(at("repo_pool.max_slots")?.location.line == 5)
        #expect(at("repo_pool.branch_template")?.location.line == 6)
        #expect(at("repo_pool.branch_template")?.message == "branch_template agents/{spec} must contain {task.id}, or every task would share one branch")
        #expect(at("repo_pool.worktrees")?.code == .unknownField)
    }

    @Test func theJournalLivesBesideTheConfigurationWhenMovedAndRecordFailuresHaveATimeout() throws {
        let dir = try TemporaryDirectory("journal-config")
        defer { dir.remove() }
        try dir.write(
            "conf/necro.yaml",
            """
            dispatcher:
              journal_path: ../other-disk/necro.jsonl
              record_failure_timeout: 45s
            agent_pools:
              local: {max_concurrency: 1, config: {command: [/bin/true]}}
            """)
        let configuration = try ConfigurationLoader.load(path: dir.file("conf/necro.yaml"))
        #expect(configuration.journalPath == URL(fileURLWithPath: dir.file("other-disk/necro.jsonl")).standardizedFileURL.path)
        #expect(configuration.recordFailureTimeout == .seconds(45))
        #expect(DispatcherConfiguration().journalPath == nil && DispatcherConfiguration().recordFailureTimeout == .seconds(30))
        let problems = issues(
            """
            dispatcher:
              journal_path: "some/folder/"
              record_failure_timeout: forever
            agent_pools:
              local: {max_concurrency: 1, config: {command: [/bin/true]}}
            """)
        #expect(problems.map(\.location.line) == [2, 3], "\(problems)")
        #expect(problems.first?.message.contains("dispatcher.journal_path must name a file") == true)
    }

    /// A local pool without a command loads (a task routed to it fails, naming what is missing);
    /// a docker pool needs its image.
    @Test func aPoolNeedsConcurrencyADockerPoolAnImage() {
        let found = issues("agent_pools:\n  local:\n    type: local-process\n")
        #expect(Set(found.compactMap(\.location.field)) == ["agent_pools.local.max_concurrency"])
        #expect(issues("agent_pools:\n  local: {max_concurrency: 1}\n").isEmpty)
        #expect(issues("agent_pools:\n  d: {type: docker, max_concurrency: 1}\n").map(\.location.field) == ["agent_pools.d.config.image"])
        let docker = issues(
            "agent_pools:\n  d:\n    type: docker\n    max_concurrency: 1\n    config:\n      image: x\n      pull: always\n      nice: 3\n      pids_limit: 0\n")
        #expect(docker.map(\.location.field) == ["agent_pools.d.config.pull", "agent_pools.d.config.nice", "agent_pools.d.config.pids_limit"])
        #expect(docker.map(\.location.line) == [7, 8, 9])
        #expect(issues("dispatcher: {}\n").map(\.message) == ["no agent pool is configured: add one under agent_pools"])
        #expect(issues("agent_pools: [local]\n").first?.code == .wrongType)
        #expect(issues("agent_pools:\n  local: {max_concurrency: 1, config: {command: []}}\n").first?.message.hasPrefix("command must be a non-empty argv list") == true)
    }

    @Test func malformedYamlIsOneErrorWithItsLine() {
        let found = issues("dispatcher:\n  scheduling_policy: [fifo\n")
        #expect(found.count == 1)
        #expect(found.first?.code == .malformed)
        #expect(found.first?.location.line != nil)
    }

    /// The design documents' example `config/dispatcher.yaml`, as written there (comments and
    /// all): its kubernetes pool is refused where it stands; without it (and the skills routed
    /// only to it), everything loads, docker pool included.
    @Test func theSeedsExampleConfigurationLoadsButForItsKubernetesPool() throws {
        let seeds = """
            dispatcher:
              poll_interval: 5  # 秒
              scheduling_policy: priority  # fifo, priority, skill-based, fair-share
              max_global_concurrency: 10
              heartbeat_timeout: 60  # 秒
              retry_max_attempts: 3
              retry_backoff_base: 2.0
              graceful_shutdown_timeout: 300  # 秒

            agent_pools:
              local:
                type: local-process
                max_concurrency: 2
                enabled: true
              \("")
              docker:
                type: docker
                max_concurrency: 4
                cpu_quota: 4
                memory_quota: 8192  # MB
                enabled: true
                config:
                  image: necrocode/runner:latest
                  mount_repo_pool: true
              \("")
              k8s:
                type: kubernetes
                max_concurrency: 10
                cpu_quota: 10
                memory_quota: 20480  # MB
                enabled: true
                config:
                  namespace: necrocode-agents
                  job_template: manifests/runner-job.yaml

            skill_mapping:
              backend: [docker, k8s]
              frontend: [docker, k8s]
              database: [docker]
              devops: [k8s]
              default: [local]
            """
        let found = issues(seeds)
        #expect(found.map(\.location.field) == ["agent_pools.k8s.type"], "\(found)")
        let lines = seeds.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(found.first?.location.line == (lines.firstIndex(of: "    type: kubernetes") ?? 0) + 1)
        #expect(found.first?.message.hasPrefix("pool type kubernetes is not supported yet") == true)

        let k8s = try #require(lines.firstIndex(of: "  k8s:"))
        let end = try #require(lines.firstIndex(of: "skill_mapping:"))
        let withoutKubernetes = (lines[..<k8s] + lines[end...]).map { $0.replacingOccurrences(of: ", k8s]", with: "]") }
            .filter { !$0.contains("devops: [k8s]") }.joined(separator: "\n")
        let configuration = try ConfigurationLoader.load(text: withoutKubernetes, file: "dispatcher.yaml")
        #expect(configuration.pools.map(\.name) == ["local", "docker"])
        let docker = try #require(configuration.pool(named: "docker"))
        #expect(docker.type == .docker && docker.container?.image == "necrocode/runner:latest" && docker.container?.mountRepoPool == true)
        #expect(docker.command.argv.isEmpty, "no command: the image's own entrypoint and command run")
        #expect(docker.container?.network == "none" && docker.container?.pull == ContainerSettings.Pull.never)
        #expect(configuration.pool(named: "local")?.command.argv.isEmpty == true, "a local pool without a command loads")
        #expect(configuration.skillMapping["backend"] == ["docker"])
    }

    @Test func aDockerPoolsOwnSettingsAreRead() throws {
        let configuration = try ConfigurationLoader.load(
            text: """
                agent_pools:
                  agents:
                    type: docker
                    max_concurrency: 2
                    default_resources: {cpu: 1.5, memory_mb: 512}
                    config:
                      image: my-agent:1
                      command: [claude, -p, "{task.title}"]
                      env: {MODE: ci}
                      env_from_host: [ANTHROPIC_API_KEY]
                      user: "1000:1000"
                      network: host
                      pids_limit: 256
                      pull: missing
                      mount_repo_pool: false
                """, file: "necro.yaml")
        let pool = try #require(configuration.pools.first)
        var expected = ContainerSettings(image: "my-agent:1")
        expected.environmentFromHost = ["ANTHROPIC_API_KEY"]
        expected.user = "1000:1000"
        expected.network = "host"
        expected.pidsLimit = 256
        expected.pull = .missing
        expected.mountRepoPool = false
        #expect(pool.container == expected)
        #expect(pool.command.argv == ["claude", "-p", "{task.title}"] && pool.environment == ["MODE": "ci"])
        #expect(pool.limits.defaultResources == TaskResources(cpu: 1.5, memoryMB: 512))
    }
}

@Suite struct AgentConfigurationTests {
    @Test func theAgentItsStepsItsStallTimeoutAndTheGateTimeoutAreRead() throws {
        let configuration = try ConfigurationLoader.load(
            text: """
                dispatcher:
                  gate_timeout: 10m
                agent:
                  command: [claude, -p]
                  steps: each
                  stall_timeout: 20m
                agent_pools:
                  local: {max_concurrency: 1}
                """, file: "necro.yaml")
        #expect(configuration.gateTimeout == .seconds(600))
        #expect(configuration.agent?.command == ["claude", "-p"] && configuration.agent?.steps == .each)
        #expect(configuration.agent?.stallTimeout == .seconds(1200) && configuration.agent?.location == "necro.yaml:4")
        #expect(configuration.pools[0].runsNecroRunner && configuration.pools[0].location == "necro.yaml:8")
        // Defaults.
        let plain = try ConfigurationLoader.load(text: "agent_pools:\n  local: {max_concurrency: 1, config: {command: [x]}}\n", file: "necro.yaml")
        #expect(plain.gateTimeout == .seconds(1800) && plain.agent == nil && !plain.pools[0].runsNecroRunner)
    }

    @Test func aBadAgentIsRefusedWithItsLine() {
        let found = issues(
            """
            agent:
              steps: sometimes
              colour: blue
            dispatcher: {gate_timeout: never}
            agent_pools:
              local: {max_concurrency: 1}
            """)
        let messages = found.map { "\($0.location.line ?? 0): \($0.message)" }
        #expect(messages.contains { $0.hasPrefix("2: agent.steps must be once") }, "\(messages)")
        #expect(messages.contains { $0.hasPrefix("3: unknown key colour") }, "\(messages)")
        #expect(messages.contains { $0.contains("agent needs command") }, "\(messages)")
        #expect(messages.contains { $0.hasPrefix("4: ") && $0.contains("found \"never\"") }, "\(messages)")
    }
    @Test func anAgentInOneLineIsAPresetAndAPresetCanBeOverridden() throws {
        let claude = try ConfigurationLoader.load(text: "agent: claude\nagent_pools:\n  local: {max_concurrency: 1}\n", file: "necro.yaml")
        #expect(claude.agent?.preset == "claude" && claude.agent?.command.first == "claude" && claude.agent?.promptVia == .stdin)
        #expect(claude.agent?.resume == ["--resume", "{agent.session}"] && claude.agent?.location == "necro.yaml:1")
        let codex = try ConfigurationLoader.load(
            text: """
                agent:
                  preset: codex
                  args: [--model, gpt-5-codex]
                  prompt_via: file
                  steps: each
                budget: {task_usd: 2.5, taskset_usd: 40}
                agent_pools:
                  local: {max_concurrency: 1}
                """, file: "necro.yaml")
        #expect(codex.agent?.command == ["codex", "exec", "--json", "--sandbox", "workspace-write", "--skip-git-repo-check", "--model", "gpt-5-codex"])
        #expect(codex.agent?.promptVia == .file && codex.agent?.steps == .each && codex.agent?.resume == ["resume", "{agent.session}"])
        #expect(codex.budget == BudgetConfiguration(taskUSD: 2.5, tasksetUSD: 40, location: "necro.yaml:6"))
    }

    @Test func aPromptTemplateIsReadBesideTheConfigurationAndCheckedWithItsLine() throws {
        let dir = try TemporaryDirectory("prompt-template")
        defer { dir.remove() }
        try dir.write("prompt.md", "Task {{task.id}}: {{task.title}}\n{{#steps}}Steps:\n{{steps}}\n{{/steps}}")
        try dir.write("bad.md", "Task {{task.id}}\n\nFix {{tsk.title}}\n")
        try dir.write("necro.yaml", "agent: {preset: aider, prompt_template: prompt.md}\nagent_pools:\n  local: {max_concurrency: 1}\n")
        let good = try ConfigurationLoader.load(path: dir.file("necro.yaml"))
        #expect(good.agent?.promptTemplate?.hasPrefix("Task {{task.id}}") == true)
        try dir.write("necro.yaml", "agent:\n  preset: aider\n  prompt_template: bad.md\nagent_pools:\n  local: {max_concurrency: 1}\n")
        do {
            _ = try ConfigurationLoader.load(path: dir.file("necro.yaml"))
            Issue.record("a template with an unknown name loaded")
        } catch {
            let issue = error.issues.first
            #expect(issue?.location.line == 3 && issue?.location.field == "agent.prompt_template")
            #expect(issue?.message.contains("bad.md, line 3: unknown name {{tsk.title}}") == true, "\(String(describing: issue))")
        }
        // It travels in TASK_CONTEXT: a template too large for it is refused.
        try dir.write("big.md", String(repeating: "{{task.title}} ", count: 3000))
        try dir.write("necro.yaml", "agent: {preset: claude, prompt_template: big.md}\nagent_pools:\n  local: {max_concurrency: 1}\n")
        #expect(throws: SpecValidationError.self) { try ConfigurationLoader.load(path: dir.file("necro.yaml")) }
        do { _ = try ConfigurationLoader.load(path: dir.file("necro.yaml")) } catch {
            #expect(error.issues.first?.message.contains("is 45000 bytes: at most 32 KiB") == true, "\(error.issues)")
        }
    }

    @Test func badPresetsPromptWaysResumesAndBudgetsAreRefusedWithTheirLines() {
        let found = issues(
            """
            agent:
              preset: gemini
              prompt_via: pigeon
              resume: [--resume]
              prompt_template: /nonexistent/prompt.md
            budget:
              task_usd: -1
              total: 3
            agent_pools:
              local: {max_concurrency: 1}
            """)
        let messages = found.map { "\($0.location.line ?? 0): \($0.message)" }
        #expect(messages.contains { $0.hasPrefix("2: unknown agent preset gemini (known: claude, codex, aider)") }, "\(messages)")
        #expect(messages.contains { $0.hasPrefix("3: agent.prompt_via must be arg, file or stdin, found pigeon") }, "\(messages)")
        #expect(messages.contains { $0.hasPrefix("4: agent.resume must hold {agent.session}") }, "\(messages)")
        #expect(messages.contains { $0.hasPrefix("5: cannot read the prompt template /nonexistent/prompt.md") }, "\(messages)")
        #expect(messages.contains { $0.hasPrefix("7: budget.task_usd must be an amount in US dollars above 0") }, "\(messages)")
        #expect(messages.contains { $0.hasPrefix("8: unknown key total") }, "\(messages)")
        #expect(issues("agent: gemini\nagent_pools:\n  l: {max_concurrency: 1}\n").first?.message.hasPrefix("unknown agent preset gemini") == true)
    }
}

