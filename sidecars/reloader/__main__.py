from podkit.sidecars.reloader import main

main()
