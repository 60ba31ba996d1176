from podkit.initkits.waitfor import main

main()
