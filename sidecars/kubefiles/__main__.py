from podkit.sidecars.kubefiles import main

main()
