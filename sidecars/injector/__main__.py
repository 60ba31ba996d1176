from podkit.sidecars.injector import main

main()
