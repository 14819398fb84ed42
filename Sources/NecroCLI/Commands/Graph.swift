import ArgumentParser
import NecroCore
import NecroRegistry

/// `necro graph SPEC`: the task graph as Mermaid or Graphviz text.
struct Graph: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the task graph of a spec as Mermaid or Graphviz (dot).",
        discussion: "Arrows run from a dependency to the task that waits on it; groups are drawn as boxes around their tasks."
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case mermaid, dot
    }

    @Argument(help: "The spec file.")
    var spec: String

    @OptionGroup var order: SpecOrderOption

    @Option(help: "Output format: mermaid or dot.")
    var format: Format = .mermaid

    func run() async throws {
        let loaded = try loadSpecOrExit(spec, order: order.mode)
        let renderer = GraphRenderer(spec: loaded.spec, graph: loaded.validated.graph)
        print(format == .mermaid ? renderer.mermaid() : renderer.dot())
    }
}

/// Draws a validated taskset.
struct GraphRenderer {
    let spec: TaskSetSpec
    let graph: TaskGraph
    /// Each group's tasks, and the top-level tasks under nil, in declaration order.
    private let childrenByParent: [TaskID?: [Int]]

    init(spec: TaskSetSpec, graph: TaskGraph) {
        self.spec = spec
        self.graph = graph
        var children: [TaskID?: [Int]] = [:]
        for (i, task) in spec.tasks.enumerated() { children[task.parent, default: []].append(i) }
        childrenByParent = children
    }

    private func node(_ index: Int) -> String { "t\(index)" }

    private func label(_ index: Int) -> String {
        let task = spec.tasks[index]
        var text = "\(task.id) \(task.title)"
        if let skill = task.requiredSkill { text += " [\(skill)]" }
        return text.replacingOccurrences(of: "\"", with: "'")
    }

    private func children(of index: Int?) -> [Int] {
        childrenByParent[index.map { spec.tasks[$0].id }] ?? []
    }

    /// A parent with work of its own: drawn as a box holding its own node and its subtasks, with an
    /// edge from its node to each subtask; what waits on it waits on the whole box.
    private func runsOwnWork(_ index: Int) -> Bool { !graph.isGroup[index] && !children(of: index).isEmpty }

    /// The box of a working parent, in Mermaid.
    private func box(_ index: Int) -> String { "g\(index)" }

    /// Declared edges (dependency → dependent) and parent-to-group nesting are drawn; the implicit
    /// group edges are shown by the nesting itself.
    private var edges: [(from: Int, to: Int)] {
        var result: [(Int, Int)] = []
        for (i, task) in spec.tasks.enumerated() {
            for dep in task.dependencies { if let d = graph.index(of: dep) { result.append((d, i)) } }
            if !graph.isGroup[i] { for child in children(of: i) { result.append((i, child)) } }
        }
        return result
    }

    func mermaid() -> String {
        var lines = ["flowchart LR"]
        func emit(_ index: Int, depth: Int) {
            let pad = String(repeating: "  ", count: depth)
            let task = spec.tasks[index]
            if graph.isGroup[index] {
                lines.append("\(pad)subgraph \(node(index))[\"\(label(index))\"]")
                for child in children(of: index) { emit(child, depth: depth + 1) }
                lines.append("\(pad)end")
                return
            }
            let own = runsOwnWork(index)
            if own { lines.append("\(pad)subgraph \(box(index))[\"\(label(index))\"]") }
            let inner = own ? pad + "  " : pad
            lines.append("\(inner)\(node(index))[\"\(label(index))\"]" + (task.markedDone ? ":::done" : task.optional ? ":::optional" : ""))
            if own {
                for child in children(of: index) { emit(child, depth: depth + 1) }
                lines.append("\(pad)end")
            }
        }
        for root in children(of: nil) { emit(root, depth: 1) }
        for edge in edges {
            // From a working parent's own node to its subtasks; from its box to what waits on it.
            let from = runsOwnWork(edge.from) && spec.tasks[edge.to].parent != spec.tasks[edge.from].id ? box(edge.from) : node(edge.from)
            lines.append("  \(from) --> \(node(edge.to))")
        }
        lines.append("  classDef done fill:#d4edda,stroke:#2e7d32")
        lines.append("  classDef optional stroke-dasharray: 4 3")
        return lines.joined(separator: "\n")
    }

    func dot() -> String {
        var lines = ["digraph \"\(spec.name)\" {", "  compound=true;", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
        /// A group's edges attach to one of its tasks and clip at the cluster's border.
        func anchor(_ index: Int) -> Int {
            var current = index
            while graph.isGroup[current], let first = children(of: current).first { current = first }
            return current
        }
        func emit(_ index: Int, depth: Int) {
            let pad = String(repeating: "  ", count: depth)
            let task = spec.tasks[index]
            let own = runsOwnWork(index)
            if graph.isGroup[index] || own {
                lines.append("\(pad)subgraph cluster_\(node(index)) {")
                lines.append("\(pad)  label=\"\(label(index))\";")
            }
            if !graph.isGroup[index] {
                var attributes = ["label=\"\(label(index))\""]
                if task.markedDone { attributes.append("style=\"rounded,filled\", fillcolor=\"#d4edda\"") }
                if task.optional { attributes.append("style=\"rounded,dashed\"") }
                lines.append("\(own ? pad + "  " : pad)\(node(index)) [\(attributes.joined(separator: ", "))];")
            }
            if graph.isGroup[index] || own {
                for child in children(of: index) { emit(child, depth: depth + 1) }
                lines.append("\(pad)}")
            }
        }
        for root in children(of: nil) { emit(root, depth: 1) }
        for edge in edges {
            var attributes: [String] = []
            let fromBox = runsOwnWork(edge.from) && spec.tasks[edge.to].parent != spec.tasks[edge.from].id
            if graph.isGroup[edge.from] || fromBox { attributes.append("ltail=cluster_\(node(edge.from))") }
            if graph.isGroup[edge.to] { attributes.append("lhead=cluster_\(node(edge.to))") }
            let suffix = attributes.isEmpty ? "" : " [\(attributes.joined(separator: ", "))]"
            lines.append("  \(node(anchor(edge.from))) -> \(node(anchor(edge.to)))\(suffix);")
        }
        lines.append("}")
        return lines.joined(separator: "\n")
    }
}
