from inference_node.cli import main

main()
