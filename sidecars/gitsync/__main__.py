from podkit.sidecars.gitsync import main

main()
