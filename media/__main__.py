from media.server import main

main()
