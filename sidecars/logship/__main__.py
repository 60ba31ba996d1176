from podkit.sidecars.logship import main

main()
