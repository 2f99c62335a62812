"""Video consults: availability, booking, the virtual waiting room, signaling, and the consult record."""
