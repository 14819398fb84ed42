import NecroCLI

await Necro.runMain()
